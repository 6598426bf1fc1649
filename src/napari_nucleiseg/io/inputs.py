"""What ``predict`` reads: image files, folders of them, stage-1 sample folders and roots."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ..errors import FileProblem
from .images import IMAGE_SUFFIXES, image_files
from .stage1 import image_path, is_sample_folder, is_stage1_root, list_samples


def _folder_inputs(folder: Path) -> list[tuple[str, Path]]:
    """(id, image file) of a sample folder, a root of them, or a folder of image files.

    A sample folder or root is read as one even when image files lie beside its samples.
    """
    if is_sample_folder(folder):
        return [(folder.name, image_path(folder))]
    if is_stage1_root(folder):
        return [(f.name, image_path(f)) for f in list_samples(folder)]
    files = image_files(folder)
    if not files:
        raise FileProblem(
            folder,
            f"holds no image file ({', '.join(IMAGE_SUFFIXES)}) and no stage-1 sample folder",
        )
    return [(p.stem, p) for p in files]


def collect_images(paths: Iterable[str | os.PathLike]) -> list[tuple[str, Path]]:
    """(id, image file) for every input: a file's stem, or a sample folder's name.

    Parameters
    ----------
    paths : iterable of path-like
        Image files (PNG, TIFF, JPEG), folders of image files (each file, sorted,
        not recursive, hidden ones left out), stage-1 sample folders, or stage-1 roots.

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
        elif path.is_dir():
            items = _folder_inputs(path)
        elif path.exists():
            raise FileProblem(path, "is neither an image file nor a folder")
        elif path.is_symlink():
            raise FileProblem(path, "is a symbolic link to nothing (a loop or a missing target)")
        else:
            raise FileProblem(path, "does not exist")
        for image_id, file in items:
            if image_id in found:
                raise FileProblem(file, f"has the id {image_id!r} of {found[image_id]} too")
            found[image_id] = file
    if not found:
        raise FileProblem(".", "no input image given")
    return list(found.items())
