"""What ``predict`` reads: image files, folders of them, stage-1 sample folders and roots,
and ``images/`` + ``masks/`` roots."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ..errors import FileProblem
from .images import IMAGE_SUFFIXES, image_files
from .stage1 import image_path, is_sample_folder, is_stage1_root, list_samples
from .zarr_images import is_ome_zarr


def strip_ome(stem: str) -> str:
    """``stem`` without a trailing ``.ome`` (``a.ome`` of ``a.ome.tif`` is ``a``)."""
    return stem[:-4] if stem.lower().endswith(".ome") and len(stem) > 4 else stem


def image_id(path: Path) -> str:
    """An image file's id: its name without the suffix, nor ``.ome`` (``a.ome.tif`` and
    ``a.ome.zarr`` are ``a``)."""
    return strip_ome(path.stem)


def _folder_inputs(folder: Path) -> list[tuple[str, Path]]:
    """(id, image file) of a sample folder, a root of them, or a folder of image files.

    A sample folder or root is read as one even when image files lie beside its samples.
    """
    if is_sample_folder(folder):
        return [(folder.name, image_path(folder))]
    if is_stage1_root(folder):
        return [(f.name, image_path(f)) for f in list_samples(folder)]
    if (folder / "masks").is_dir() and (folder / "images").is_dir():
        folder = folder / "images"  # an images/ + masks/ root (io.paired): its images
    files = image_files(folder)
    if not files:
        raise FileProblem(
            folder,
            f"holds no image file ({', '.join(IMAGE_SUFFIXES)}) and no stage-1 sample folder",
        )
    return [(image_id(p), p) for p in files]


def collect_images(paths: Iterable[str | os.PathLike]) -> list[tuple[str, Path]]:
    """(id, image file) for every input: a file's :func:`image_id`, or a sample folder's name.

    Parameters
    ----------
    paths : iterable of path-like
        Image files (PNG, TIFF, JPEG), OME-Zarr images, folders of image files (each
        file, sorted, not recursive, hidden ones left out), stage-1 sample folders, or
        stage-1 roots.

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
            items = [(image_id(path), path)]
        elif is_ome_zarr(path):  # an OME-Zarr image is a folder
            items = [(image_id(path), path)]
        elif path.is_dir():
            items = _folder_inputs(path)
        elif path.exists():
            raise FileProblem(path, "is neither an image file nor a folder")
        elif path.is_symlink():
            raise FileProblem(path, "is a symbolic link to nothing (a loop or a missing target)")
        else:
            raise FileProblem(path, "does not exist")
        for key, file in items:
            if key in found:
                raise FileProblem(file, f"has the id {key!r} of {found[key]} too")
            found[key] = file
    if not found:
        raise FileProblem(".", "no input image given")
    return list(found.items())
