"""``nucleiseg measure IMAGE LABELS -o table.csv``: one row of measurements per nucleus."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import FileProblem
from ..io.atomic import check_writable_folder, same_file
from ..io.images import read_intensity_image, read_label_image
from ..io.metadata import pixel_size_for
from ..measure import measure, unit_name, write_table
from . import add_pixel_size


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``measure`` sub-command to the ``nucleiseg`` sub-parsers."""
    p = sub.add_parser(
        "measure",
        help="a CSV of shape and intensity per nucleus (in µm when the pixel size is known)",
    )
    p.add_argument("image", help="the original image (PNG, TIFF, JPEG): intensities come from it")
    p.add_argument("labels", help="its label image (TIFF or PNG; 0 is background)")
    p.add_argument("-o", "--output", required=True, help="the CSV file to write")
    add_pixel_size(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing CSV")
    p.set_defaults(func=cmd_measure)
    return p


def cmd_measure(args: argparse.Namespace) -> int:
    image_path, labels_path, out = Path(args.image), Path(args.labels), Path(args.output)
    if out.exists() and not args.overwrite:
        raise FileProblem(out, "already exists; nothing was written (pass --overwrite)")
    if out.is_dir():
        raise FileProblem(out, "is a folder; -o takes a CSV file name")
    if same_file(out, image_path) or same_file(out, labels_path):
        raise FileProblem(out, "is an input; the table would replace it (choose another -o)")
    check_writable_folder(out.parent if str(out.parent) else Path("."))
    image = read_intensity_image(image_path)  # every channel
    labels = read_label_image(labels_path)
    if labels.shape != image.shape[:2]:
        raise FileProblem(
            labels_path, f"is {labels.shape[0]}x{labels.shape[1]}, its image "
            f"{image.shape[0]}x{image.shape[1]}: not the labels of {image_path.name}"
        )  # fmt: skip
    pixel_size = pixel_size_for(image_path, args.pixel_size)
    try:
        table = measure(labels, image, pixel_size)
    except ValueError as exc:
        raise FileProblem(image_path, str(exc)) from None
    write_table(out, table)
    print(
        f"{len(table['label'])} nuclei measured in {unit_name(pixel_size)} -> {out}",
        file=sys.stderr,
    )
    return 0
