"""StarDist's network alone, timed for benchmark.py's speed table; run by the Python of a
side environment that has StarDist and TensorFlow (they cannot share ours):

    python3 -m venv ../stardist-env
    ../stardist-env/bin/pip install stardist==0.9.2 tensorflow-cpu==2.21.0
    ../stardist-env/bin/python benchmarks/stardist_speed.py 520x696 1024x1024

The network of StarDist's published 2D models (``2D_versatile_fluo``: U-Net of depth 3,
32 base filters, 32 rays, grid 2x2) with random weights, through ``model.predict`` (the
network and its padding; no normalisation, no non-maximum suppression). Prints one JSON
object: the median seconds per size.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    import numpy as np
    from stardist.models import Config2D, StarDist2D

    repeats = int(os.environ.get("REPEATS", "5"))
    sizes = [tuple(int(v) for v in arg.split("x")) for arg in sys.argv[1:]]
    config = Config2D(n_rays=32, grid=(2, 2), n_channel_in=1, unet_n_depth=3)
    model = StarDist2D(config, name=None, basedir=None)
    times = {}
    for h, w in sizes:
        image = np.random.default_rng(0).random((h, w), dtype=np.float32)
        model.predict(image)  # warm-up
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            model.predict(image)
            runs.append(time.perf_counter() - start)
        times[f"{h}x{w}"] = statistics.median(runs)
    print(json.dumps(times))


if __name__ == "__main__":
    main()
