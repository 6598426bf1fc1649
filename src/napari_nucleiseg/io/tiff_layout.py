"""Convert a curated stage-1 root to the StarDist/Cellpose ``images/`` + ``masks/`` TIFF layout."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Generator
from pathlib import Path

import numpy as np
import tifffile

from ..errors import FileProblem
from . import stage1
from .atomic import file_problem, swap_into_place
from .manifest import check_split, read_manifest

__all__ = ["export_tiff_layout", "iter_export_tiff_layout"]


def iter_export_tiff_layout(
    root: str | Path,
    out: str | Path,
    *,
    split: str | None = None,
    overwrite: bool = False,
) -> Generator[tuple[int, int], None, Path]:
    """Convert a curated stage-1 root to the StarDist/Cellpose ``images/`` + ``masks/`` layout.

    Writes ``OUT/images/<id>.tif`` (the image, uint8 grey or RGB) and
    ``OUT/masks/<id>.tif`` (the instance labels, uint16 or uint32) for each
    sample, into a temporary folder beside OUT that is renamed to OUT at the end.

    Parameters
    ----------
    root : path-like
        A stage-1 root (or one sample folder).
    out : path-like
        The folder to create.
    split : {"train", "validation"}, optional
        Only the samples the root's manifest marks so.
    overwrite : bool
        Replace an existing OUT; refused by default.

    Yields
    ------
    (done, total) : (int, int)
        After each sample.

    Returns
    -------
    Path
        OUT.

    Raises
    ------
    FileProblem
        OUT exists, a sample cannot be read, or OUT cannot be written.
    """
    root, out = Path(root), Path(out)
    if out.exists() and not overwrite:
        raise FileProblem(out, "already exists")
    folders = stage1.resolve_samples(root)
    if split is not None:
        check_split(split)
        marked = {k for k, v in read_manifest(root).items() if v.get("split") == split}
        folders = [f for f in folders if f.name in marked]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    except OSError as exc:
        raise file_problem(out, exc, "created") from None
    try:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        for done, folder in enumerate(folders, start=1):
            sample = stage1.read_sample(folder)
            tifffile.imwrite(tmp / "images" / f"{sample.id}.tif", sample.image, compression="zlib")
            labels = (
                sample.labels
                if sample.labels is not None
                else np.zeros(sample.image.shape[:2], np.uint16)
            )
            tifffile.imwrite(tmp / "masks" / f"{sample.id}.tif", labels, compression="zlib")
            yield done, len(folders)
        old = tmp.with_name(tmp.name + ".old")
        swap_into_place(tmp, out, old)
        tmp = None
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        raise file_problem(exc.filename or out, exc) from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def export_tiff_layout(
    root: str | Path, out: str | Path, *, split: str | None = None, overwrite: bool = False
) -> Path:
    """:func:`iter_export_tiff_layout` run to the end, for scripts."""
    gen = iter_export_tiff_layout(root, out, split=split, overwrite=overwrite)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value
