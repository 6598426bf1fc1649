"""Kaggle DSB2018 stage-1 folders: ``<id>/images/<id>.png`` and ``<id>/masks/*.png``.

A *sample folder* holds one image and its masks (one binary PNG per nucleus);
a *root* holds sample folders. Reading builds an instance-label image with one
label per mask file, numbered in the masks' sorted file-name order, and keeps
the mapping label -> file name so that an export can keep the names.

Overlapping masks: a pixel covered by several masks goes to the smallest of
them (fewest pixels; on a tie, the file name that sorts first). The corrected
community data set has six images with 1-2 such pixels; each case is reported
with a :class:`OverlapWarning` naming both files.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import FileProblem
from .images import label_dtype, png_header, read_mask, read_stage1_image

IMAGES = "images"
MASKS = "masks"


class OverlapWarning(UserWarning):
    """Two mask files of one sample claim the same pixels."""


@dataclass(frozen=True)
class Overlap:
    """Pixels claimed by two masks; they went to ``winner``."""

    winner: str
    loser: str
    pixels: int


@dataclass(frozen=True)
class Sample:
    """One stage-1 sample as read from disk.

    Attributes
    ----------
    id : str
        The sample folder's name.
    path : Path
        The sample folder.
    image : (H, W) or (H, W, 3) ndarray of uint8
        The image as stored (alpha dropped).
    labels : (H, W) ndarray of uint16 or uint32, or None
        One label per mask file, 0 = background; None when the sample has no
        ``masks/`` folder (an unannotated test image).
    mask_names : dict of int to str
        Label -> mask file name (``<name>.png``).
    overlaps : tuple of Overlap
        Pixels shared by two masks and how they were resolved.
    """

    id: str
    path: Path
    image: np.ndarray
    labels: np.ndarray | None
    mask_names: dict[int, str] = field(default_factory=dict)
    overlaps: tuple[Overlap, ...] = ()


@dataclass(frozen=True)
class Problem:
    """One problem found by :func:`check`: an error makes the data unusable, a warning does not."""

    path: Path
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        prefix = "" if self.severity == "error" else f"{self.severity}: "
        return f"{prefix}{self.path}: {self.message}"


@dataclass(frozen=True)
class SampleInfo:
    """What the PNG header of a sample's image says, without decoding pixels."""

    id: str
    path: Path
    mode: str
    shape: tuple[int, int]


def image_path(folder: str | Path) -> Path:
    """The image file of a sample folder: ``<folder>/images/<folder name>.png``."""
    folder = Path(folder)
    return folder / IMAGES / f"{folder.name}.png"


def is_sample_folder(path: str | Path) -> bool:
    """True when ``path`` holds ``images/<name>.png``."""
    return image_path(path).is_file()


def is_stage1_root(path: str | Path) -> bool:
    """True when ``path`` is a folder with at least one sample folder in it."""
    path = Path(path)
    return path.is_dir() and any(is_sample_folder(child) for child in _subfolders(path))


def _subfolders(path: Path) -> Iterator[Path]:
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_dir() and not entry.name.startswith("."):
                yield Path(entry.path)


def list_samples(root: str | Path) -> list[Path]:
    """The sample folders of a root, sorted by id.

    Raises
    ------
    FileProblem
        If ``root`` does not exist, is not a folder, or holds no sample folder.
    """
    root = Path(root)
    if not root.exists():
        raise FileProblem(root, "does not exist")
    if not root.is_dir():
        raise FileProblem(root, "is not a folder")
    samples = sorted((p for p in _subfolders(root) if is_sample_folder(p)), key=lambda p: p.name)
    if not samples:
        raise FileProblem(root, "holds no stage-1 sample (no <id>/images/<id>.png)")
    return samples


def resolve_samples(path: str | Path) -> list[Path]:
    """A sample folder -> [itself]; a root -> its sample folders.

    Raises
    ------
    FileProblem
        If ``path`` is neither.
    """
    path = Path(path)
    if is_sample_folder(path):
        return [path]
    if _meant_as_sample(path):
        raise FileProblem(image_path(path), "does not exist; a sample folder holds images/<id>.png")
    return list_samples(path)


def _meant_as_sample(path: Path) -> bool:
    """True for a folder with ``images/`` or ``masks/``: a sample folder, maybe a broken one."""
    return (path / IMAGES).is_dir() or (path / MASKS).is_dir()


def folders_to_check(path: str | Path) -> list[Path]:
    """What :func:`check` validates: a sample folder, or every folder of a root meant as one.

    Unlike :func:`resolve_samples`, a root's subfolder with ``masks/`` or ``images/`` but
    no ``images/<id>.png`` is kept: it is a sample that lost its image, not noise to skip.

    Raises
    ------
    FileProblem
        If ``path`` does not exist, or holds no folder meant as a sample.
    """
    path = Path(path)
    if path.is_dir() and not _meant_as_sample(path):
        folders = sorted(
            (p for p in _subfolders(path) if _meant_as_sample(p)), key=lambda p: p.name
        )
        if folders:
            return folders
    return resolve_samples(path)


def scan(root: str | Path) -> list[SampleInfo]:
    """Ids, image modes and sizes of every sample of a root, from PNG headers only (fast)."""
    infos = []
    for folder in list_samples(root):
        mode, shape = png_header(image_path(folder))
        infos.append(SampleInfo(folder.name, folder, mode, shape))
    return infos


def mask_paths(folder: str | Path) -> list[Path] | None:
    """The sorted mask PNGs of a sample folder, or None when it has no ``masks/`` folder."""
    masks = Path(folder) / MASKS
    if not masks.is_dir():
        return None
    return sorted(p for p in masks.iterdir() if p.suffix.lower() == ".png" and p.is_file())


def read_image(folder: str | Path) -> np.ndarray:
    """The image of a sample folder; see :func:`~napari_nucleiseg.io.images.read_stage1_image`."""
    folder = Path(folder)
    if not folder.exists():
        raise FileProblem(folder, "does not exist")
    return read_stage1_image(image_path(folder))


def read_labels(
    folder: str | Path, shape: tuple[int, int]
) -> tuple[np.ndarray | None, dict[int, str], tuple[Overlap, ...]]:
    """Merge a sample's mask files into one instance-label image.

    Parameters
    ----------
    folder : path-like
        The sample folder.
    shape : (int, int)
        The image's (height, width); every mask must have it.

    Returns
    -------
    labels : (H, W) ndarray of uint16 or uint32, or None
        None when the folder has no ``masks/``; all zeros when ``masks/`` is empty.
    mask_names : dict of int to str
        Label -> mask file name.
    overlaps : tuple of Overlap

    Raises
    ------
    FileProblem
        A corrupt, non-binary or wrongly sized mask.
    """
    paths = mask_paths(folder)
    if paths is None:
        return None, {}, ()
    labels = np.zeros(shape, dtype=label_dtype(len(paths)))
    names = {i: p.name for i, p in enumerate(paths, start=1)}
    pixels = [np.flatnonzero(read_mask(p, shape)) for p in paths]
    # Paint the largest first so that the smallest wins shared pixels; on equal
    # size, the name sorting first is painted last and wins.
    order = sorted(range(len(paths)), key=lambda i: (-pixels[i].size, -i))
    flat = labels.reshape(-1)
    overlaps = []
    for i in order:
        under = flat[pixels[i]]
        if under.any():
            taken, counts = np.unique(under[under != 0], return_counts=True)
            overlaps += [
                Overlap(winner=paths[i].name, loser=names[int(t)], pixels=int(c))
                for t, c in zip(taken, counts)
            ]
        flat[pixels[i]] = i + 1
    for o in overlaps:
        warnings.warn(
            f"{Path(folder) / MASKS}: masks {o.winner} and {o.loser} share {o.pixels} pixel(s); "
            f"they go to the smaller, {o.winner}",
            OverlapWarning,
            stacklevel=2,
        )
    return labels, names, tuple(overlaps)


def read_sample(folder: str | Path) -> Sample:
    """Read a stage-1 sample folder into its image and instance labels.

    Raises
    ------
    FileProblem
        Missing folder or image, corrupt or 16-bit image, or a bad mask; the
        message names the file.
    """
    folder = Path(folder)
    image = read_image(folder)
    labels, names, overlaps = read_labels(folder, image.shape[:2])
    return Sample(folder.name, folder, image, labels, names, overlaps)


def check_sample(folder: str | Path) -> list[Problem]:
    """Every problem of one sample folder, not only the first."""
    folder = Path(folder)
    problems: list[Problem] = []
    try:
        image = read_image(folder)
    except FileProblem as exc:
        return [Problem(Path(exc.path), exc.reason)]
    images_dir = folder / IMAGES
    extra = sorted(p.name for p in images_dir.iterdir() if p != image_path(folder))
    if extra:
        problems.append(
            Problem(
                images_dir,
                f"holds other files besides {folder.name}.png: {', '.join(extra)}",
                "warning",
            )
        )
    paths = mask_paths(folder)
    if paths is None:
        return problems + [
            Problem(folder / MASKS, "does not exist: the sample has no ground truth", "warning")
        ]
    masks = folder / MASKS
    others = sorted(p.name for p in masks.iterdir() if p not in paths)
    if others:
        problems.append(Problem(masks, f"holds files that are not PNG masks: {', '.join(others)}"))
    if not paths:  # legal in DSB2018, but more often masks lost on the way
        problems.append(Problem(masks, "holds no mask: the sample has no nucleus", "warning"))
    shape = image.shape[:2]
    n_bad = len(problems)
    for p in paths:
        try:
            if not read_mask(p, shape).any():
                problems.append(Problem(p, "mask is empty (no nucleus pixel)"))
        except FileProblem as exc:
            problems.append(Problem(Path(exc.path), exc.reason))
    if len(problems) == n_bad:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OverlapWarning)
            _, _, overlaps = read_labels(folder, shape)
        problems += [
            Problem(
                masks / o.loser,
                f"shares {o.pixels} pixel(s) with {o.winner}; "
                f"the reader gives them to the smaller, {o.winner}",
                "warning",
            )
            for o in overlaps
        ]
    return problems


def check(path: str | Path) -> list[Problem]:
    """Validate a stage-1 root or one sample folder; an empty list means no problem."""
    try:
        folders = folders_to_check(path)
    except FileProblem as exc:
        return [Problem(Path(exc.path), exc.reason)]
    problems: list[Problem] = []
    for folder in folders:
        problems += check_sample(folder)
    return problems
