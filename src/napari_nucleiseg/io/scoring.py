"""Pair predictions with the truth on disk and score them (the DSB2018 metric).

Predictions are a folder of label images or a Kaggle submission CSV; the truth
is a stage-1 root or sample folder with masks, or a folder of label images.
Images pair by id: the sample folder's name or the label file's stem.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from ..errors import FileProblem
from ..metrics import DatasetScore, score_dataset
from . import paired, stage1
from .images import LABEL_SUFFIXES, image_files, png_header, read_label_image
from .rle import labels_from_submission, read_submission

#: (id, labels) pairs of the truth, in the truth's order
TruthItems = Iterator[tuple[str, np.ndarray]]


def _label_files(folder: Path) -> dict[str, Path]:
    files = {p.stem: p for p in image_files(folder, LABEL_SUFFIXES)}
    if not files:
        raise FileProblem(folder, f"holds no label image ({', '.join(LABEL_SUFFIXES)})")
    return files


def _truth(path: Path) -> tuple[dict[str, tuple[int, int]], TruthItems]:
    """Shapes of the truth images, and a lazy iterator over (id, labels)."""
    if not path.exists():
        raise FileProblem(path, "does not exist")
    if not stage1.is_sample_folder(path) and paired.is_paired_root(path):
        path = path / paired.MASKS  # an images/ + masks/ root: its label images
    if stage1.is_sample_folder(path) or stage1.is_stage1_root(path):
        folders = stage1.resolve_samples(path)
        for f in folders:
            if stage1.mask_paths(f) is None:
                raise FileProblem(f / stage1.MASKS, "does not exist: the truth needs masks")
        shapes = {f.name: png_header(stage1.image_path(f))[1] for f in folders}

        def read() -> TruthItems:
            for f in folders:
                yield f.name, stage1.read_sample(f).labels

        return shapes, read()
    if not path.is_dir():
        raise FileProblem(path, "is neither a stage-1 folder nor a folder of label images")
    files = _label_files(path)
    labels = {i: read_label_image(p) for i, p in files.items()}
    return {i: a.shape for i, a in labels.items()}, iter(labels.items())


def evaluate_paths(
    pred: str | Path,
    truth: str | Path,
    *,
    progress: Callable[[TruthItems], Iterable[tuple[str, np.ndarray]]] | None = None,
) -> tuple[DatasetScore, list[str], list[str]]:
    """Score predictions on disk against the truth on disk.

    Parameters
    ----------
    pred : str or Path
        A folder of label images (``<id>.tif`` / ``.png``) or a Kaggle submission CSV.
    truth : str or Path
        A stage-1 root or sample folder with masks, or a folder of label images.
    progress : callable, optional
        Wraps the iterator over the truth's (id, labels) pairs, e.g. in a progress bar;
        it must yield the same pairs.

    Returns
    -------
    score : DatasetScore
        One score per truth image; an image without a prediction scores as finding nothing.
    missing : list of str
        The truth's ids that have no prediction, in the truth's order.
    extra : list of str
        The predictions' ids that have no truth (ignored), sorted.

    Raises
    ------
    FileProblem
        A path that does not exist or is of the wrong kind, a malformed submission, or a
        prediction of another size than its truth.
    """
    pred, truth = Path(pred), Path(truth)
    shapes, truth_items = _truth(truth)
    if pred.is_file() and pred.suffix.lower() == ".csv":
        rows = read_submission(pred)
        predicted = labels_from_submission(rows, shapes, source=pred)
        extra = sorted(set(rows) - set(shapes))

        def predicted_labels(image_id):
            return predicted.get(image_id)
    else:
        if not pred.exists():
            raise FileProblem(pred, "does not exist")
        if not pred.is_dir():
            raise FileProblem(pred, "is neither a submission CSV nor a folder of label images")
        files = _label_files(pred)
        extra = sorted(set(files) - set(shapes))

        def predicted_labels(image_id):
            return read_label_image(files[image_id]) if image_id in files else None

    missing: list[str] = []

    def triples():
        items = truth_items if progress is None else progress(truth_items)
        for image_id, labels in items:
            p = predicted_labels(image_id)
            if p is None:
                missing.append(image_id)
            elif p.shape != labels.shape:
                raise FileProblem(
                    pred,
                    f"prediction for {image_id} is {p.shape[0]}x{p.shape[1]}, "
                    f"its truth is {labels.shape[0]}x{labels.shape[1]}",
                )
            yield image_id, labels, p

    result = score_dataset(triples())
    return result, missing, extra
