"""Export N real samples as curated stage-1 training data, and that root as a TIFF layout.

    python benchmarks/bench_export.py [ROOT] [-n 100]

Reading is timed apart from writing; the exports go to a temporary folder.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

from napari_nucleiseg.io import list_samples, read_sample
from napari_nucleiseg.io.export import export_sample, export_tiff_layout

DEFAULT_ROOT = Path(__file__).parents[2] / "shared" / "data" / "dsb2018" / "stage1_train"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default=DEFAULT_ROOT, type=Path)
    parser.add_argument("-n", type=int, default=100)
    args = parser.parse_args()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        samples = [read_sample(f) for f in list_samples(args.root)[: args.n]]
    t_read = time.perf_counter() - start
    nuclei = sum(len(s.mask_names) for s in samples)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "curated"
        out.mkdir()
        start = time.perf_counter()
        for s in samples:
            export_sample(out, s.id, s.image, s.labels, original=s.labels,
                          mask_names=s.mask_names, source=s.path)
        t_export = time.perf_counter() - start
        start = time.perf_counter()
        export_tiff_layout(out, Path(tmp) / "tiff")
        t_tiff = time.perf_counter() - start
    print(f"{len(samples)} samples, {nuclei} nuclei from {args.root}")
    print(f"read:        {t_read:6.2f} s")
    print(f"export:      {t_export:6.2f} s ({t_export / len(samples) * 1000:.0f} ms per sample)")
    print(f"TIFF layout: {t_tiff:6.2f} s")


if __name__ == "__main__":
    main()
