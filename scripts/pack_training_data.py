"""Pack training data into compact images/ + masks/ roots, one per kind of image.

A training machine without ``../shared`` (a rented GPU, say) gets the data in
this form: each stage-1 sample becomes one image (grey PNG when its channels
are equal) and one label PNG, under ``OUT/dsb/<kind>/`` where ``<kind>`` is
:func:`napari_nucleiseg.training.kinds.image_kind` (size, colour, background),
so that a leave-kind-out run trains on every kind folder but one. An
``images/`` + ``masks/`` root (MoNuSeg) is copied under ``OUT/<name>/``.
Colour images are written as JPEG of quality ``--jpeg`` when given: the copy
must fit the 64 MiB a GPU call carries, and these H&E images come from
JPEG-compressed slide scans already (TCGA's are saved at quality 70 or so).

    python scripts/pack_training_data.py --stage1 ../shared/data/dsb2018/stage1_train_fixed \\
        --exclude-ids scripts/splits/exclude_ids.txt \\
        --paired monuseg=../shared/data/monuseg2018 --paired-exclude scripts/splits/monuseg_val.txt \\
        --jpeg 85 -o .carry/data

With ``--reference``, it writes instead the compact reference set that ships in the
package (``napari_nucleiseg/reference/``, :mod:`napari_nucleiseg.reference`): per kind
of stage-1 image with at least ``MIN_KIND`` samples, ``REPLAY`` 256x256 crops (each
image's window with the most nuclei) that a
fine-tune mixes in and ``MEASURE`` that score what the fine-tune forgot, named
``<kind>--<id>.png``:

    python scripts/pack_training_data.py --stage1 ../shared/data/dsb2018/stage1_train_fixed \
        --exclude-ids scripts/splits/exclude_ids.txt --exclude-ids scripts/splits/val_ids.txt \
        --reference -o src/napari_nucleiseg/reference
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from napari_nucleiseg.io import OverlapWarning
from napari_nucleiseg.kinds import image_kind, is_colour
from napari_nucleiseg.training import find_samples, read_ids, read_samples


def _write(root: Path, sample_id: str, image: np.ndarray, labels: np.ndarray, jpeg: int | None):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    if image.ndim == 3 and not is_colour(image):
        image = image[..., 0]
    elif image.ndim == 3:
        image = image[..., :3]
    if jpeg and image.ndim == 3:
        Image.fromarray(image).save(
            root / "images" / f"{sample_id}.jpg", quality=jpeg, subsampling=0
        )
    else:
        Image.fromarray(image).save(root / "images" / f"{sample_id}.png", compress_level=9)
    Image.fromarray(labels.astype(np.uint16)).save(root / "masks" / f"{sample_id}.png")


#: kinds with fewer stage-1 samples are left out of the reference set; crops per kind
MIN_KIND, REPLAY, MEASURE, CROP = 8, 2, 2, 256


def _busiest(labels: np.ndarray, side: int) -> tuple[slice, slice]:
    """The ``side`` x ``side`` window (on a 64-px grid) holding the most nuclei."""
    best, where = -1, (slice(0, side), slice(0, side))
    for y in range(0, max(labels.shape[0] - side, 0) + 1, 64):
        for x in range(0, max(labels.shape[1] - side, 0) + 1, 64):
            window = (slice(y, y + side), slice(x, x + side))
            count = np.unique(labels[window]).size
            if count > best:
                best, where = count, window
    return where


def write_reference(samples, out: Path) -> None:
    """The reference set: per kind, REPLAY crops under ``replay/`` and MEASURE under ``measure/``,
    drawn with a fixed seed from the kind's samples in id order."""
    by_kind: dict[str, list] = {}
    for s in sorted(samples, key=lambda s: s.id):
        by_kind.setdefault(image_kind(s.image), []).append(s)
    rng = np.random.default_rng(0)
    for kind, members in sorted(by_kind.items()):
        if len(members) < MIN_KIND:
            continue
        chosen = rng.choice(len(members), REPLAY + MEASURE, replace=False)
        for k, i in enumerate(chosen):
            s = members[i]
            window = _busiest(s.labels, CROP)
            labels = s.labels[window]
            part = "measure" if k >= REPLAY else "replay"
            _write(out / part, f"{kind}--{s.id[:12]}", s.image[window], labels, None)
            print(f"{part}/{kind}--{s.id[:12]}: {len(np.unique(labels)) - 1} nuclei")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage1", help="a stage-1 root")
    p.add_argument(
        "--exclude-ids", action="append", default=[], help="ids of the stage-1 root to leave out"
    )
    p.add_argument("--reference", action="store_true", help="write the package's reference set")
    p.add_argument("--paired", action="append", default=[], help="NAME=ROOT of images/ + masks/")
    p.add_argument("--paired-exclude", help="ids of the paired roots to leave out")
    p.add_argument("--jpeg", type=int, help="JPEG quality for colour images (default: PNG)")
    p.add_argument("-o", "--output", required=True)
    args = p.parse_args()
    out = Path(args.output)
    warnings.simplefilter("ignore", OverlapWarning)
    if args.stage1:
        exclude = {i for path in args.exclude_ids for i in read_ids(path)}
        samples = read_samples(find_samples(args.stage1, exclude_ids=exclude))
        if args.reference:
            write_reference(samples, out)
            samples = []
        kinds: dict[str, int] = {}
        for s in samples:
            kind = image_kind(s.image)
            kinds[kind] = kinds.get(kind, 0) + 1
            _write(out / "dsb" / kind, s.id, s.image, s.labels, args.jpeg)
        for kind, n in sorted(kinds.items()):
            print(f"dsb/{kind}: {n}")
    exclude = set(read_ids(args.paired_exclude)) if args.paired_exclude else set()
    for item in args.paired:
        name, root = item.split("=", 1)
        samples = read_samples(find_samples(root, exclude_ids=exclude))
        for s in samples:
            _write(out / name, s.id, s.image, s.labels, args.jpeg)
        print(f"{name}: {len(samples)}")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{size / 2**20:.1f} MiB in {out}")


if __name__ == "__main__":
    main()
