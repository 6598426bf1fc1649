"""Run-length encoding in the Kaggle DSB2018 convention, and submission CSV files.

Pixels are numbered from 1, top to bottom, then left to right (column-major);
a run is ``start length``, and a mask is the space-separated list of its runs.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from ..errors import FileProblem
from .atomic import write_atomically
from .images import label_dtype

SUBMISSION_HEADER = ("ImageId", "EncodedPixels")


def rle_encode(mask: np.ndarray) -> str:
    """Encode a binary (H, W) mask as Kaggle run-length text ("" for an empty mask)."""
    pixels = np.asarray(mask, dtype=bool).ravel(order="F")
    padded = np.concatenate([[False], pixels, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1]) + 1
    starts, ends = edges[0::2], edges[1::2]
    runs = np.empty(2 * starts.size, dtype=np.int64)
    runs[0::2], runs[1::2] = starts, ends - starts
    return " ".join(map(str, runs))


def _runs(rle: str) -> tuple[np.ndarray, np.ndarray]:
    """0-based starts and lengths of run-length text, checked as far as no shape is needed."""
    try:
        values = np.array(rle.split(), dtype=np.int64)
    except (ValueError, OverflowError):
        raise ValueError("run-length values must be whole numbers below 2**63") from None
    if values.size % 2:
        raise ValueError("run-length text has an odd number of values")
    starts, lengths = values[0::2] - 1, values[1::2]
    if np.any(starts < 0) or np.any(lengths <= 0):
        raise ValueError("run-length starts must be >= 1 and lengths >= 1")
    if np.any(lengths[:-1] > starts[1:] - starts[:-1]):  # (no sum that could overflow)
        raise ValueError("runs overlap or are not sorted")
    return starts, lengths


def rle_decode(rle: str, shape: tuple[int, int]) -> np.ndarray:
    """Decode Kaggle run-length text into a (H, W) bool mask.

    Raises
    ------
    ValueError
        Values that are not whole numbers, an odd number of them, non-positive
        start or length, overlapping or unsorted runs, or a run past the image's end.
    """
    starts, lengths = _runs(rle)
    size = int(np.prod(shape))
    if np.any(lengths > size - starts):
        end = int(np.max(starts + np.minimum(lengths, size + 1)))
        raise ValueError(f"a run ends at pixel {end}, past the {shape[0]}x{shape[1]} image")
    ends = starts + lengths
    flat = np.zeros(size + 1, dtype=np.int8)
    np.add.at(flat, starts, 1)
    np.add.at(flat, ends, -1)
    return np.cumsum(flat[:-1]).astype(bool).reshape(shape, order="F")


def labels_to_rles(labels: np.ndarray) -> list[str]:
    """One run-length text per label of an instance image, in label order."""
    labels = np.asarray(labels)
    flat = labels.ravel(order="F")
    order = np.argsort(flat, kind="stable")
    values = flat[order]
    ids, first = np.unique(values, return_index=True)
    bounds = list(first) + [values.size]
    rles = []
    for k, lab in enumerate(ids):
        if lab == 0:
            continue
        idx = (
            order[bounds[k] : bounds[k + 1]] + 1
        )  # 1-based, column-major, sorted by stable argsort
        breaks = np.flatnonzero(np.diff(idx) != 1) + 1
        starts = np.concatenate([[idx[0]], idx[breaks]])
        ends = np.concatenate([idx[breaks - 1], [idx[-1]]])
        runs = np.empty(2 * starts.size, dtype=np.int64)
        runs[0::2], runs[1::2] = starts, ends - starts + 1
        rles.append(" ".join(map(str, runs)))
    return rles


def write_submission(path: str | Path, predictions: Iterable[tuple[str, np.ndarray]]) -> None:
    """Write a Kaggle DSB2018 submission: one row per nucleus, an empty row for an image with none.

    Parameters
    ----------
    path : path-like
        The CSV to write; written to a temporary file and renamed into place.
    predictions : iterable of (str, (H, W) ndarray of int)
        Image id and its instance labels (which cannot overlap by construction).
    """
    write_submission_rows(path, ((i, labels_to_rles(labels)) for i, labels in predictions))


def write_submission_rows(path: str | Path, rows: Iterable[tuple[str, list[str]]]) -> None:
    """:func:`write_submission` from run-length texts already encoded (a batch keeps them,
    not every label image, until the end)."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(SUBMISSION_HEADER)
            for image_id, rles in rows:
                writer.writerows([(image_id, r) for r in rles] or [(image_id, "")])

    write_atomically(path, write)


def read_submission(path: str | Path) -> dict[str, list[str]]:
    """Read a submission CSV into image id -> list of run-length texts (empty list: no nuclei).

    Raises
    ------
    FileProblem
        Missing file or a header other than ``ImageId,EncodedPixels``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileProblem(path, "does not exist")
    rows: dict[str, list[str]] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # a BOM (Excel's) is fine
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or tuple(h.strip() for h in header) != SUBMISSION_HEADER:
                expected = ",".join(SUBMISSION_HEADER)
                raise FileProblem(path, f"header is {header}, expected {expected}")
            for line, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) != 2:
                    raise FileProblem(path, f"line {line} has {len(row)} fields, expected 2")
                image_id, rle = row[0].strip(), row[1].strip()
                rows.setdefault(image_id, [])
                if rle:
                    rows[image_id].append(rle)
    except UnicodeDecodeError as exc:
        raise FileProblem(path, f"is not UTF-8 text (byte {exc.start} of a line)") from None
    except csv.Error as exc:
        raise FileProblem(path, f"is not a readable CSV ({exc})") from None
    return rows


def rles_to_labels(
    rles: list[str], shape: tuple[int, int], *, source: str | Path = ""
) -> np.ndarray:
    """Decode a list of run-length texts into an instance-label image.

    Raises
    ------
    FileProblem
        A malformed run, or two nuclei sharing a pixel (Kaggle refused such submissions).
    """
    labels = np.zeros(shape, dtype=label_dtype(len(rles)))
    for i, rle in enumerate(rles, start=1):
        try:
            mask = rle_decode(rle, shape)
        except ValueError as exc:
            raise FileProblem(source, f"nucleus {i}: {exc}") from None
        if np.any(labels[mask]):
            raise FileProblem(
                source, f"nucleus {i} overlaps another nucleus; overlaps are not allowed"
            )
        labels[mask] = i
    return labels


def labels_from_submission(
    rows: Mapping[str, list[str]], shapes: Mapping[str, tuple[int, int]], *, source: str | Path
) -> dict[str, np.ndarray]:
    """Decode the submission rows of every image whose shape is known; the runs of the
    others are checked as far as they can be without a shape (they are still malformed
    submissions)."""
    for image_id, rles in rows.items():
        if image_id not in shapes:
            for i, rle in enumerate(rles, start=1):
                try:
                    _runs(rle)
                except ValueError as exc:
                    raise FileProblem(f"{source} ({image_id})", f"nucleus {i}: {exc}") from None
    return {
        image_id: rles_to_labels(rles, shapes[image_id], source=f"{source} ({image_id})")
        for image_id, rles in rows.items()
        if image_id in shapes
    }
