"""The contrast floor of ``preprocess.MIN_CONTRAST`` against real and empty images.

Run: ``python benchmarks/bench_contrast.py``. Prints, for the stage-1 training
images and the MoNuSeg H&E tiles beside the repository (``../shared/data``),
the lowest and median :func:`~napari_nucleiseg.preprocess.contrast`, and the
contrast of flat and noise-only images: the floor must sit between them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_nucleiseg.io import stage1
from napari_nucleiseg.io.images import image_files, read_image_file
from napari_nucleiseg.preprocess import MIN_CONTRAST, contrast

DATA = Path(__file__).parents[2] / "shared" / "data"


def real_sets() -> dict[str, list[np.ndarray]]:
    """Images of each real set found beside the repository (read one at a time)."""
    sets = {}
    root = DATA / "dsb2018" / "stage1_train"
    if root.is_dir():
        sets["DSB2018 stage1_train"] = (stage1.read_image(f) for f in stage1.list_samples(root))
    tiles = DATA / "monuseg2018" / "images"
    if tiles.is_dir():
        sets["MoNuSeg 2018 H&E"] = (read_image_file(p) for p in image_files(tiles))
    return sets


def empty_images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "flat 137 +- 1, 8-bit": rng.integers(136, 139, (256, 256)).astype(np.uint8),
        "uniform noise, 8-bit": rng.integers(0, 256, (520, 696)).astype(np.uint8),
        "Gaussian noise, float": rng.normal(100, 10, (256, 256)).astype(np.float32),
    }


def main() -> None:
    print(f"contrast floor (MIN_CONTRAST): {MIN_CONTRAST:g}\n")
    print("| images | n | lowest | median |\n| --- | --- | --- | --- |")
    for name, images in real_sets().items():
        values = np.array([contrast(image) for image in images])
        print(f"| {name} | {values.size} | {values.min():.1f} | {np.median(values):.1f} |")
    for name, image in empty_images().items():
        print(f"| {name} | 1 | {contrast(image):.1f} | |")


if __name__ == "__main__":
    main()
