"""The inversion rule of :mod:`napari_nucleiseg.preprocess` against every real image.

Run: ``python benchmarks/bench_polarity.py [--workers N]``. For the 670 stage-1
training images and the 30 MoNuSeg H&E tiles beside the repository
(``../shared/data``), prints per kind the lowest and highest of each statistic
of :func:`~napari_nucleiseg.preprocess.polarity` and how many images the rule
inverts, against how many it should (and against the median rule of before:
the scaled median above 0.3).

Kinds: a stage-1 image is *colour* when its channels differ anywhere (all are
H&E-like, dark nuclei); a grey one is *brightfield* when its nuclei (its masks)
are darker than its background, else *fluorescence*. Two kinds are made from
the fluorescence images, to check what the data set lacks: *noisy RGB* (the
grey image in three channels, each with Gaussian noise of sigma 4: a colour
camera's grey image) and *composite* (the image in red, a dilated, blurred
copy at half strength as cytoplasm in green, noise in blue: a fluorescence
composite on black). Neither may be inverted.
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from napari_nucleiseg.io import stage1
from napari_nucleiseg.io.images import image_files, read_image_file
from napari_nucleiseg.preprocess import Polarity, polarity

DATA = Path(__file__).parents[2] / "shared" / "data"
#: kinds in the order printed, and whether the rule must invert them
KINDS = {
    "stage-1 fluorescence (grey)": False,
    "stage-1 brightfield (grey)": True,
    "stage-1 colour (H&E-like)": True,
    "MoNuSeg H&E tiles": True,
    "fluorescence as noisy RGB": False,
    "fluorescence as composite": False,
}
STATS = ("median", "spread", "whiteness", "dim_end")


def stage1_kind(folder: Path, image: np.ndarray) -> str:
    if image.ndim == 3 and bool(np.any(image[..., :3].std(axis=-1) > 0)):
        return "stage-1 colour (H&E-like)"
    grey = image[..., 0] if image.ndim == 3 else image
    if grey.mean() > 100:  # only a bright image can be brightfield
        labels = stage1.read_sample(folder).labels
        if np.median(grey[labels > 0]) < np.median(grey[labels == 0]):
            return "stage-1 brightfield (grey)"
    return "stage-1 fluorescence (grey)"


def noisy_rgb(grey: np.ndarray) -> np.ndarray:
    noise = np.random.default_rng(1).normal(0, 4, (*grey.shape, 3))
    return np.clip(grey.astype(np.float32)[..., None] + noise, 0, 255).astype(np.uint8)


def composite(grey: np.ndarray) -> np.ndarray:
    grey = grey.astype(np.float32)
    cytoplasm = 0.5 * ndi.gaussian_filter(ndi.grey_dilation(grey, size=15), 3)
    noise = np.random.default_rng(2).normal(3, 1, grey.shape)
    return np.clip(np.stack([grey, cytoplasm, noise], axis=-1), 0, 255).astype(np.uint8)


def measure_stage1(folder: Path) -> list[tuple[str, Polarity]]:
    image = stage1.read_image(folder)
    kind = stage1_kind(folder, image)
    out = [(kind, polarity(image))]
    if kind == "stage-1 fluorescence (grey)":
        grey = image[..., 0] if image.ndim == 3 else image
        out += [
            ("fluorescence as noisy RGB", polarity(noisy_rgb(grey))),
            ("fluorescence as composite", polarity(composite(grey))),
        ]
    return out


def measure_tile(path: Path) -> list[tuple[str, Polarity]]:
    return [("MoNuSeg H&E tiles", polarity(read_image_file(path)))]


def jobs() -> list[tuple[object, Path]]:
    found = []
    root = DATA / "dsb2018" / "stage1_train"
    if root.is_dir():
        found += [(measure_stage1, folder) for folder in stage1.list_samples(root)]
    tiles = DATA / "monuseg2018" / "images"
    if tiles.is_dir():
        found += [(measure_tile, path) for path in image_files(tiles)]
    return found


def _run(job: tuple[object, Path]) -> list[tuple[str, Polarity]]:
    function, path = job
    return function(path)


def span(values: list[float]) -> str:
    values = [v for v in values if np.isfinite(v)]
    return f"{min(values):.3f} - {max(values):.3f}" if values else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    todo = jobs()
    if not todo:
        print(f"no data under {DATA}")
        return
    with ProcessPoolExecutor(args.workers) as pool:
        results = [r for rs in pool.map(_run, todo, chunksize=8) for r in rs]
    print("| kind | n | median | spread (noise sigmas) | whiteness | dim end | inverted | "
          "should be | median > 0.3 |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for kind, should in KINDS.items():
        found = [p for k, p in results if k == kind]
        if not found:
            continue
        spread = [p.spread for p in found]
        spreads = f"{min(spread):.1f} - {max(spread):.1f}"
        cells = [span([p.median for p in found]), spreads]
        cells += [span([getattr(p, s) for p in found]) for s in STATS[2:]]
        inverted = sum(p.inverts for p in found)
        before = sum(p.median > 0.3 for p in found)
        print(
            f"| {kind} | {len(found)} | {' | '.join(cells)} | {inverted} | "
            f"{len(found) if should else 0} | {before} |"
        )


if __name__ == "__main__":
    main()
