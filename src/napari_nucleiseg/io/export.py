"""Write a corrected sample into an export root as stage-1 training data, safely.

One sample is written as ``ROOT/<id>/images/<id>.png`` and one single-channel
0/255 PNG per nucleus in ``ROOT/<id>/masks/``, the layout
:func:`napari_nucleiseg.io.stage1.read_sample` reads. A nucleus whose pixels
equal those of a nucleus of the original labels keeps that nucleus's mask file
name; a new or changed nucleus is named by the SHA-256 of its mask (see
:func:`mask_name`), like the 64-hex names of the original data set.

Safety: everything is written into a hidden temporary folder inside ROOT
(``.export-<id>-*``, which the reader skips) and renamed into place; an
existing id is refused unless the caller chooses ``if_exists="overwrite"`` or
``"new-version"``; the source sample folder is never written; an unwritable
target raises :class:`~napari_nucleiseg.errors.FileProblem` and leaves nothing
behind.

Concurrency: any number of processes may export into one root at once. The
PNGs are encoded in parallel, each export in its own temporary folder; then,
under the root's lock (:func:`~napari_nucleiseg.io.lock.root_lock`), one
export at a time checks the id, renames its folder into place and rewrites the
manifest (:mod:`napari_nucleiseg.io.manifest`), so no sample and no manifest
entry is lost, and of two exports of one id the second is refused (or, as
asked, replaces the first or becomes a new version). A temporary folder left by
a killed export is removed by the next export into the root.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from ..edit import LabelChanges, compact_labels, compare_labels
from ..errors import FileProblem
from . import stage1
from .atomic import file_problem, remove_stale, swap_into_place
from .lock import lock_open_file, root_lock
from .manifest import MANIFEST, check_split, read_manifest, rewriting

IF_EXISTS = ("refuse", "overwrite", "new-version")
_TMP_PREFIX = ".export-"
_OWNER = ".owner"  # in each temporary folder, locked by the export writing it
_SAMPLE = "sample"  # the sample folder inside a temporary folder
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")

__all__ = [
    "IF_EXISTS",
    "ExportResult",
    "SampleExists",
    "export_sample",
    "mask_file_names",
    "mask_name",
    "next_version_id",
    "prepare_image",
]


class SampleExists(FileProblem):
    """The sample id is taken in the export root; nothing was written."""


# ---------------------------------------------------------------- names
def _nuclei(labels: np.ndarray):
    """(label, bounding box, (h, w) bool mask within the box) of each nucleus, by label."""
    compact, values = compact_labels(labels)
    for index, box in enumerate(ndi.find_objects(compact), start=1):
        if box is not None:
            yield int(values[index]), box, compact[box] == index


def mask_name(mask: np.ndarray) -> str:
    """The file name of a new mask: the SHA-256 hex of its pixels, plus ``.png``.

    The hash is taken over the mask as written: a C-ordered (H, W) uint8 array
    of 0 and 255, row by row; equal masks get equal names.

    Parameters
    ----------
    mask : (H, W) ndarray of bool
    """
    pixels = np.ascontiguousarray(np.where(mask, 255, 0).astype(np.uint8))
    return hashlib.sha256(pixels.tobytes()).hexdigest() + ".png"


def mask_file_names(
    labels: np.ndarray,
    original: np.ndarray | None = None,
    mask_names: Mapping[int, str] | None = None,
) -> tuple[dict[int, str], LabelChanges]:
    """The mask file name of each nucleus, and the changes against the original.

    Parameters
    ----------
    labels : (H, W) ndarray of int
        The labels to export.
    original : (H, W) ndarray of int, optional
        The labels as read from the source (e.g. ``Sample.labels``).
    mask_names : mapping of int to str, optional
        Original label -> mask file name (e.g. ``Sample.mask_names``).

    Returns
    -------
    names : dict of int to str
        Label -> file name (``<name>.png``) for every nucleus of ``labels``.
    changes : LabelChanges
    """
    changes = compare_labels(labels, original)
    mask_names = dict(mask_names or {})
    names: dict[int, str] = {}
    for label, box, inside in _nuclei(labels):
        kept = mask_names.get(changes.same.get(label, -1))
        if kept is not None:
            names[label] = kept if kept.lower().endswith(".png") else kept + ".png"
        else:
            mask = np.zeros(labels.shape, bool)
            mask[box] = inside
            names[label] = mask_name(mask)
    if len(set(names.values())) != len(names):
        raise ValueError("two nuclei would get the same mask file name")
    return names, changes


# ---------------------------------------------------------------- ids
def _validate_id(sample_id: str) -> str:
    sample_id = str(sample_id).strip()
    if not _ID_RE.match(sample_id) or sample_id in {".", ".."}:
        raise ValueError(
            f"sample id {sample_id!r} is not usable as a folder name: use letters, digits, "
            "'_', '-', '.', '+', starting with a letter or digit"
        )
    return sample_id


def next_version_id(root: str | Path, sample_id: str) -> str:
    """A free id for a new version of a sample: ``<id>_v2``, ``<id>_v3``, ...

    A sample id that already ends in ``_v<n>`` is versioned from its base.

    Parameters
    ----------
    root : path-like
        The export root (need not exist).
    sample_id : str
    """
    root = Path(root)
    base = re.sub(r"_v\d+$", "", _validate_id(sample_id))
    n = 2
    while (root / f"{base}_v{n}").exists():
        n += 1
    return f"{base}_v{n}"


# ---------------------------------------------------------------- image
def prepare_image(image: np.ndarray) -> np.ndarray:
    """The image as a stage-1 PNG holds it: 8-bit grey or 8-bit RGB, pixels unchanged.

    Integer images whose values all lie in 0..255 are stored as uint8 (lossless);
    an RGBA image with an opaque alpha (255 everywhere) loses the alpha, as the
    reader drops it anyway. Everything else is refused rather than converted.

    Parameters
    ----------
    image : (H, W), (H, W, 3) or (H, W, 4) ndarray

    Returns
    -------
    (H, W) or (H, W, 3) ndarray of uint8

    Raises
    ------
    ValueError
        Float or bool pixels, values outside 0..255, a transparent alpha, or
        another shape.
    """
    image = np.asarray(image)
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (3, 4))):
        raise ValueError(
            f"image has shape {image.shape}; a stage-1 image is (H, W) grey or (H, W, 3) RGB"
        )
    if image.size == 0:
        raise ValueError("image is empty")
    if not np.issubdtype(image.dtype, np.integer):
        raise ValueError(
            f"image has {image.dtype} pixels; a stage-1 PNG holds 8-bit integers only "
            "(convert it to uint8 yourself if that loss is acceptable)"
        )
    if image.dtype != np.uint8:
        low, high = int(image.min()), int(image.max())
        if low < 0 or high > 255:
            raise ValueError(
                f"image has {image.dtype} values {low}..{high}; a stage-1 PNG holds 0..255 only "
                "(rescale it to uint8 yourself if that loss is acceptable)"
            )
        image = image.astype(np.uint8)
    if image.ndim == 3 and image.shape[-1] == 4:
        if not np.all(image[..., 3] == 255):
            raise ValueError("image has a transparent alpha channel; stage-1 images are opaque")
        image = image[..., :3]
    return np.ascontiguousarray(image)


def _validate_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape != tuple(shape):
        raise ValueError(f"labels have shape {labels.shape}; the image is {shape[0]}x{shape[1]}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels have dtype {labels.dtype}; expected integers")
    if labels.size and labels.min() < 0:
        raise ValueError("labels must not be negative")
    return labels


# ---------------------------------------------------------------- staging
def _in_use(folder: Path) -> bool:
    """Whether a live export owns this temporary folder (holds the lock of its owner file)."""
    try:
        fd = os.open(folder / _OWNER, os.O_RDWR)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell: leave it
    try:
        return not lock_open_file(fd, wait=False)
    finally:
        os.close(fd)


def _remove_leftovers(root: Path) -> None:
    """Delete what killed exports left in ROOT; call it holding the root lock.

    A temporary manifest is only ever written under the root lock, so one whose
    process is gone is a leftover, and so is a ``.export-*`` file; a temporary
    folder is one when no process owns it. (A folder is made and its owner file
    locked under the root lock too.)
    """
    remove_stale(root / MANIFEST)
    for path in root.glob(f"{_TMP_PREFIX}*"):
        if path.is_symlink() or not path.is_dir():
            with suppress(OSError):  # best effort, like rmtree's: never block an export
                path.unlink()
        elif not _in_use(path):
            shutil.rmtree(path, ignore_errors=True)


@contextmanager
def _staging(root: Path, sample_id: str) -> Iterator[Path]:
    """A temporary folder ``ROOT/.export-<id>-*`` owned by this export, deleted on leaving.

    Its owner file stays locked until then, so other exports leave it alone;
    once its process is gone, the next export into ROOT deletes it.
    """
    with root_lock(root):
        _remove_leftovers(root)
        tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{sample_id}-", dir=root))
        owner = os.open(tmp / _OWNER, os.O_RDWR | os.O_CREAT, 0o666)
        lock_open_file(owner, wait=False)  # a new file: always free
    try:
        yield tmp
    finally:
        os.close(owner)
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- one sample
@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_sample` wrote.

    Attributes
    ----------
    id : str
        The sample id used (a new version id when one was asked for).
    path : Path
        The sample folder written.
    mask_names : dict of int to str
        Label -> mask file name.
    changes : LabelChanges
        Against the original labels given.
    entry : dict
        The manifest entry.
    """

    id: str
    path: Path
    mask_names: dict[int, str]
    changes: LabelChanges
    entry: dict


def _save_png(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array).save(path, format="PNG", compress_level=1)


def _write_sample_files(folder: Path, sample_id: str, image, labels, names) -> None:
    folder.mkdir()
    (folder / stage1.IMAGES).mkdir()
    (folder / stage1.MASKS).mkdir()
    _save_png(image, folder / stage1.IMAGES / f"{sample_id}.png")
    canvas = np.zeros(labels.shape, np.uint8)
    for label, box, inside in _nuclei(labels):
        canvas[box] = np.where(inside, 255, 0)
        _save_png(canvas, folder / stage1.MASKS / names[label])
        canvas[box] = 0


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _prepare_root(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise FileProblem(root, "is not a folder; cannot export into it")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise file_problem(root, exc, "created") from None


def export_sample(
    root: str | Path,
    sample_id: str,
    image: np.ndarray,
    labels: np.ndarray,
    *,
    original: np.ndarray | None = None,
    mask_names: Mapping[int, str] | None = None,
    source: str | Path | None = None,
    model: str | None = None,
    split: str = "train",
    if_exists: str = "refuse",
) -> ExportResult:
    """Write one image and its instance labels as a stage-1 sample, atomically.

    Parameters
    ----------
    root : path-like
        The export root; created when missing.
    sample_id : str
        The sample folder's name.
    image : (H, W), (H, W, 3) or (H, W, 4) ndarray
        See :func:`prepare_image` for what is accepted.
    labels : (H, W) ndarray of int
        One label per nucleus, 0 = background.
    original : (H, W) ndarray of int, optional
        The labels as segmented or loaded: nuclei equal to one of them keep its
        mask file name, and the changes are counted against it.
    mask_names : mapping of int to str, optional
        Original label -> mask file name (``Sample.mask_names``).
    source : path-like, optional
        Where the sample came from (recorded in the manifest; never written).
    model : str, optional
        The model that segmented it (recorded in the manifest).
    split : {"train", "validation"}
    if_exists : {"refuse", "overwrite", "new-version"}
        What to do when ``ROOT/<sample_id>`` exists: raise :class:`SampleExists`,
        replace it, or write :func:`next_version_id` instead.

    Returns
    -------
    ExportResult

    Raises
    ------
    SampleExists
        The id exists and ``if_exists`` is "refuse"; nothing was written.
    FileProblem
        The root cannot be created or written, or the target is the source
        folder; nothing was written.
    ValueError
        A bad id, split or ``if_exists``, or an image or labels that a stage-1
        sample cannot hold.
    """
    root = Path(root)
    sample_id = _validate_id(sample_id)
    check_split(split)
    if if_exists not in IF_EXISTS:
        raise ValueError(f"if_exists must be one of {', '.join(IF_EXISTS)}, got {if_exists!r}")
    image = prepare_image(image)
    labels = _validate_labels(labels, image.shape[:2])
    names, changes = mask_file_names(labels, original, mask_names)

    if if_exists != "new-version":  # fail before any work; a new version's id is known later
        _refuse_source(source, root / sample_id)
    _prepare_root(root)
    try:
        with _staging(root, sample_id) as tmp:
            _write_sample_files(tmp / _SAMPLE, sample_id, image, labels, names)  # in parallel
            with root_lock(root):
                sample_id = _claim_id(root, sample_id, if_exists, source, tmp / _SAMPLE)
                entry = {
                    "source": None if source is None else str(source),
                    "model": model,
                    "added": changes.added,
                    "removed": changes.removed,
                    "changed": changes.changed,
                    "unchanged": changes.unchanged,
                    "nuclei": len(names),
                    "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "split": split,
                }
                _commit(root, tmp, sample_id, entry)
    except OSError as exc:
        raise file_problem(exc.filename or root, exc) from None
    return ExportResult(sample_id, root / sample_id, names, changes, entry)


def _commit(root: Path, tmp: Path, sample_id: str, entry: dict) -> None:
    """Rename the staged sample to ``ROOT/<id>`` and record it; call it holding the root lock.

    The new manifest is written first, so that a full disk changes nothing, and
    renamed right after the sample (a crash between the two renames leaves the
    sample whole, without its new entry).
    """
    samples = read_manifest(root)
    samples[sample_id] = entry
    with rewriting(root, samples):
        swap_into_place(tmp / _SAMPLE, root / sample_id, tmp / "old")  # deleted with tmp


def _claim_id(root: Path, sample_id: str, if_exists: str, source, staged: Path) -> str:
    """The id the staged sample takes in ROOT; call it holding the root lock.

    An existing id is refused, kept (to be replaced) or traded for a new
    version's, whose name the staged image file then takes.
    """
    target = root / sample_id
    if target.exists() or target.is_symlink():
        if if_exists == "refuse":
            raise SampleExists(
                target,
                f"already exists; overwrite it or export as a new version "
                f"(e.g. {next_version_id(root, sample_id)})",
            )
        if if_exists == "new-version":
            new_id = next_version_id(root, sample_id)
            images = staged / stage1.IMAGES
            os.rename(images / f"{sample_id}.png", images / f"{new_id}.png")
            sample_id, target = new_id, root / new_id
    _refuse_source(source, target)
    return sample_id


def _refuse_source(source, target: Path) -> None:
    if source is not None and (
        _is_within(Path(source), target) or _is_within(target, Path(source))
    ):
        raise FileProblem(target, "is the sample's source folder; export to another root or id")
