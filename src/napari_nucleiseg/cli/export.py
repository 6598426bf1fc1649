"""``nucleiseg export IMAGE LABELS -o ROOT [--id ID]``: one stage-1 sample from two files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import FileProblem
from ..io import stage1
from ..io.export import export_sample
from ..io.images import read_image_file, read_label_image
from ..io.manifest import SPLITS


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``export`` sub-command to the ``nucleiseg`` sub-parsers."""
    p = sub.add_parser(
        "export",
        help="write an image and its labels as a stage-1 training sample",
        description=(
            "Write ROOT/<id>/images/<id>.png and one 0/255 PNG per nucleus in "
            "ROOT/<id>/masks/, and record the sample in ROOT/manifest.json. "
            "Refuses (status 1, nothing changed) when ROOT/<id> exists. Several exports may "
            "run at once into one ROOT: they take turns to claim their ids."
        ),
    )
    p.add_argument("image", type=Path, help="the image (PNG, TIFF or JPEG; 8-bit grey or RGB)")
    p.add_argument(
        "labels", type=Path, help="the instance-label image (TIFF or PNG, 0 = background)"
    )
    p.add_argument("-o", "--output", dest="root", type=Path, required=True, help="export root")
    p.add_argument("--id", help="sample id (default: the image file's stem)")
    p.add_argument(
        "--source",
        type=Path,
        help="the stage-1 sample folder the labels were corrected from: nuclei left as they "
        "were keep its mask file names, and the manifest counts the changes",
    )
    p.add_argument("--model", help="the model that segmented the image (for the manifest)")
    p.add_argument("--split", choices=SPLITS, default="train", help="the manifest's split")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--overwrite", action="store_true", help="replace an existing sample")
    group.add_argument(
        "--new-version", action="store_true", help="on an existing id, write <id>_v2 (v3, ...)"
    )
    p.set_defaults(func=cmd_export)
    return p


def cmd_export(args: argparse.Namespace) -> int:
    """Run ``nucleiseg export``; bad input raises FileProblem (printed as one line by main)."""
    image = read_image_file(args.image)
    labels = read_label_image(args.labels)
    if labels.shape != image.shape[:2]:
        raise FileProblem(
            args.labels,
            f"labels are {labels.shape[0]}x{labels.shape[1]}, "
            f"the image is {image.shape[0]}x{image.shape[1]}",
        )
    original = mask_names = None
    if args.source is not None:
        sample = stage1.read_sample(args.source)  # (main() silences its overlap warning)
        original, mask_names = sample.labels, sample.mask_names
        if original is not None and original.shape != labels.shape:
            raise FileProblem(args.source, "its image is not the size of the labels")
    if_exists = "overwrite" if args.overwrite else "new-version" if args.new_version else "refuse"
    try:
        result = export_sample(
            args.root,
            args.id or args.image.stem,
            image,
            labels,
            original=original,
            mask_names=mask_names,
            source=args.source or args.image,
            model=args.model,
            split=args.split,
            if_exists=if_exists,
        )
    except ValueError as exc:
        if isinstance(exc, FileProblem):
            raise
        raise FileProblem(args.image, str(exc)) from None
    c = result.changes
    print(
        f"{result.path}: {len(result.mask_names)} nuclei "
        f"({c.unchanged} unchanged, {c.changed} changed, {c.added} added, {c.removed} removed)",
        file=sys.stderr,
    )
    return 0
