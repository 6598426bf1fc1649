"""Open a stage-1 root in napari and scroll through it: time and peak memory.

Run under a display (``xvfb-run -a python benchmarks/bench_reader.py``). Prints
one table: opening the root lazily, scrolling through N samples in the viewer
(each step decoded and drawn), and, as the reference measured in the same run,
reading the same N samples eagerly with ``read_sample``.
"""

from __future__ import annotations

import argparse
import resource
import time
import warnings
from pathlib import Path

DEFAULT_ROOT = Path(__file__).parents[2] / "shared" / "data" / "dsb2018" / "stage1_train"


def peak_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default=DEFAULT_ROOT, type=Path)
    parser.add_argument("-n", type=int, default=20, help="samples to scroll through")
    args = parser.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_nucleiseg.io import list_samples, read_sample

    viewer = napari.Viewer(show=True)
    QApplication.processEvents()
    base = peak_mib()

    start = time.perf_counter()
    layers = viewer.open(args.root, plugin="napari-nucleiseg")
    QApplication.processEvents()
    t_open = time.perf_counter() - start
    m_open = peak_mib()
    n_samples = layers[0].data.shape[0]

    start = time.perf_counter()
    for i in range(1, args.n + 1):
        viewer.dims.set_current_step(0, i)
        QApplication.processEvents()
    t_scroll = time.perf_counter() - start
    m_scroll = peak_mib()
    viewer.close()

    folders = list_samples(args.root)[1 : args.n + 1]
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in folders:
            read_sample(f)
    t_eager = time.perf_counter() - start

    print(f"root: {args.root} ({n_samples} samples)")
    print(f"{'step':<42} {'seconds':>8} {'peak MiB':>9}")
    print(f"{'napari viewer, empty':<42} {'':>8} {base:>9.0f}")
    print(f"{'open root (lazy)':<42} {t_open:>8.2f} {m_open:>9.0f}")
    print(f"{f'scroll {args.n} samples in the viewer':<42} {t_scroll:>8.2f} {m_scroll:>9.0f}")
    print(f"{f'reference: read_sample on the same {args.n}':<42} {t_eager:>8.2f}")
    print(
        f"{'reference: eager read of whole root (est.)':<42} {t_eager / args.n * n_samples:>8.1f}"
    )
    print(
        f"scroll per sample: {t_scroll / args.n * 1000:.0f} ms; "
        f"scroll / eager read of the same samples: {t_scroll / t_eager:.2f}"
    )


if __name__ == "__main__":
    main()
