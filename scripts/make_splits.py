"""Write the id lists the shipped models are trained with (deterministic; re-run to check).

- ``splits/exclude_ids.txt``: never trained on: the StarDist paper's 50 test ids
  (scored in the benchmark) and the shipped samples (the README's demo).
- ``splits/val_ids.txt``: a validation split of ``stage1_train_fixed`` with every
  kind of image: 8% of each kind (fluorescence, colour H&E/brightfield, grey
  brightfield), chosen by the SHA-256 of the id, so the choice is stable.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

from napari_nucleiseg.io import list_samples, read_stage1_image
from napari_nucleiseg.io.stage1 import image_path
from napari_nucleiseg.preprocess import should_invert
from napari_nucleiseg.samples import SAMPLES

HERE = Path(__file__).parent / "splits"
DATA = Path(__file__).parents[2] / "shared" / "data" / "dsb2018"
FRACTION = 0.08


def kind_of(image: np.ndarray) -> str:
    """fluorescence, colour (H&E-like) or brightfield (grey on a bright background)."""
    if image.ndim == 3 and not (
        np.array_equal(image[..., 0], image[..., 1])
        and np.array_equal(image[..., 1], image[..., 2])
    ):
        return "colour"
    return "brightfield" if should_invert(image) else "fluorescence"


def main(data: Path = DATA) -> None:
    test_ids = (data / "splits" / "stardist_test_ids.txt").read_text().split()
    exclude = sorted(set(test_ids) | set(SAMPLES.values()))
    kinds: dict[str, list[str]] = {}
    for folder in list_samples(data / "stage1_train_fixed"):
        if folder.name in exclude:
            continue
        kinds.setdefault(kind_of(read_stage1_image(image_path(folder))), []).append(folder.name)
    val = []
    for kind, ids in sorted(kinds.items()):
        ids.sort(key=lambda i: hashlib.sha256(i.encode()).hexdigest())
        n = max(2, round(FRACTION * len(ids)))
        val += [f"{i}  # {kind}" for i in ids[:n]]
        print(f"{kind}: {len(ids)} images, {n} for validation", file=sys.stderr)
    HERE.mkdir(exist_ok=True)
    (HERE / "exclude_ids.txt").write_text(
        "# StarDist paper test ids and the shipped samples: never trained on\n"
        + "\n".join(exclude)
        + "\n"
    )
    (HERE / "val_ids.txt").write_text(
        "# validation split of stage1_train_fixed, 8% of each kind (see make_splits.py)\n"
        + "\n".join(val)
        + "\n"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DATA)
