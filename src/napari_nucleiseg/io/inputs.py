"""What ``predict`` reads: image files, stage-1 sample folders and stage-1 roots, with ids."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ..errors import FileProblem
from .images import IMAGE_SUFFIXES
from .stage1 import image_path, is_sample_folder, is_stage1_root, list_samples


def collect_images(paths: Iterable[str | os.PathLike]) -> list[tuple[str, Path]]:
    """(id, image file) for every input: a file's stem, or a sample folder's name.

    Parameters
    ----------
    paths : iterable of path-like
        Image files (PNG, TIFF, JPEG), stage-1 sample folders, or stage-1 roots.

    Raises
    ------
    FileProblem
        A path that does not exist, is none of these, or whose id repeats an
        earlier one (outputs are named by id).
    """
    found: dict[str, Path] = {}
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise FileProblem(path, f"is not a supported image ({', '.join(IMAGE_SUFFIXES)})")
            items = [(path.stem, path)]
        elif is_sample_folder(path):
            items = [(path.name, image_path(path))]
        elif path.is_dir() and is_stage1_root(path):
            items = [(f.name, image_path(f)) for f in list_samples(path)]
        elif path.exists():
            raise FileProblem(path, "is neither an image file nor a stage-1 sample folder or root")
        else:
            raise FileProblem(path, "does not exist")
        for image_id, file in items:
            if image_id in found:
                raise FileProblem(file, f"has the id {image_id!r} of {found[image_id]} too")
            found[image_id] = file
    if not found:
        raise FileProblem(".", "no input image given")
    return list(found.items())
