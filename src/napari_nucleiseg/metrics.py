"""The 2018 Data Science Bowl score and the AP of the StarDist paper.

For an image: the IoU of every true and predicted nucleus; at each threshold
t in 0.50, 0.55, ..., 0.95 a pair matches when IoU > t (strictly); the image's
AP at t is TP / (TP + FP + FN) and its score is the mean over the ten
thresholds. A data set's score is the mean of its images' scores.

Two summaries over a data set are given at each threshold: ``ap``, the mean of
the images' AP (what the DSB score averages), and ``ap_pooled``, TP / (TP + FP
+ FN) with the counts summed over all images (StarDist's ``matching_dataset``).
An image with no true and no predicted nucleus scores 1 (nothing to find,
nothing found).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

#: The DSB2018 IoU thresholds, written out so that 0.55 is the double nearest 0.55.
THRESHOLDS: tuple[float, ...] = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def _validate_pair(truth: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    truth, pred = np.asarray(truth), np.asarray(pred)
    if truth.shape != pred.shape:
        raise ValueError(f"truth is {truth.shape} but prediction is {pred.shape}; they must match")
    for name, a in (("truth", truth), ("prediction", pred)):
        if not np.issubdtype(a.dtype, np.integer) and a.dtype != bool:
            raise ValueError(f"{name} labels must be integers, got {a.dtype}")
        if a.size and a.min() < 0:
            raise ValueError(f"{name} labels must be >= 0")
    return truth, pred


def iou_matrix(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU of every true (rows) and predicted (columns) nucleus.

    Labels need not be consecutive; rows and columns follow the sorted
    non-zero labels present in each image.

    Returns
    -------
    (n_true, n_pred) ndarray of float64
    """
    truth, pred = _validate_pair(truth, pred)
    _, t = np.unique(truth, return_inverse=True)
    _, p = np.unique(pred, return_inverse=True)
    t, p = t.ravel(), p.ravel()
    has_bg_t, has_bg_p = bool((truth == 0).any()), bool((pred == 0).any())
    nt, np_ = int(t.max(initial=-1)) + 1, int(p.max(initial=-1)) + 1
    counts = np.bincount(t * np_ + p, minlength=nt * np_).reshape(nt, np_)
    area_t, area_p = counts.sum(axis=1), counts.sum(axis=0)
    # drop the background row/column (index 0 when background is present)
    counts = counts[int(has_bg_t) :, int(has_bg_p) :]
    area_t, area_p = area_t[int(has_bg_t) :], area_p[int(has_bg_p) :]
    union = area_t[:, None] + area_p[None, :] - counts
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, counts / np.maximum(union, 1), 0.0)


@dataclass(frozen=True)
class ImageScore:
    """TP, FP, FN and AP of one image at each threshold."""

    thresholds: tuple[float, ...]
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray

    @property
    def ap(self) -> np.ndarray:
        """TP / (TP + FP + FN) at each threshold (1 where there is nothing to find or find)."""
        total = self.tp + self.fp + self.fn
        return np.where(total > 0, self.tp / np.maximum(total, 1), 1.0)

    @property
    def score(self) -> float:
        """The DSB2018 score of the image: the mean AP over the thresholds."""
        return float(self.ap.mean())


def score_image(
    truth: np.ndarray, pred: np.ndarray, thresholds: Sequence[float] = THRESHOLDS
) -> ImageScore:
    """Score one predicted instance image against the truth.

    Parameters
    ----------
    truth, pred : (H, W) ndarray of int
        Instance labels, 0 = background; any numbering.
    thresholds : sequence of float
        IoU thresholds; a pair matches when IoU > t. Thresholds >= 0.5 make the
        matching one-to-one.
    """
    if min(thresholds) < 0.5:
        raise ValueError("thresholds below 0.5 need a one-to-one assignment; use t >= 0.5")
    iou = iou_matrix(truth, pred)
    n_true, n_pred = iou.shape
    tp = np.array([int(np.count_nonzero(iou > t)) for t in thresholds])
    return ImageScore(tuple(thresholds), tp, n_pred - tp, n_true - tp)


@dataclass(frozen=True)
class DatasetScore:
    """Per-image scores and their summaries over a data set."""

    ids: tuple[str, ...]
    images: tuple[ImageScore, ...]
    thresholds: tuple[float, ...] = THRESHOLDS

    @property
    def score(self) -> float:
        """The DSB2018 score: the mean of the images' scores."""
        return float(np.mean([s.score for s in self.images])) if self.images else 0.0

    @property
    def ap(self) -> np.ndarray:
        """Mean over images of the AP at each threshold."""
        return np.mean([s.ap for s in self.images], axis=0)

    @property
    def counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """TP, FP and FN at each threshold, summed over images."""
        return tuple(
            np.sum([getattr(s, k) for s in self.images], axis=0) for k in ("tp", "fp", "fn")
        )

    @property
    def ap_pooled(self) -> np.ndarray:
        """TP / (TP + FP + FN) at each threshold, counts summed over images (StarDist's way)."""
        tp, fp, fn = self.counts
        total = tp + fp + fn
        return np.where(total > 0, tp / np.maximum(total, 1), 1.0)

    def as_dict(self) -> dict:
        """A JSON-ready summary, with each image's score."""
        tp, fp, fn = self.counts
        key = [f"{t:.2f}" for t in self.thresholds]
        return {
            "score": self.score,
            "n_images": len(self.images),
            "thresholds": list(self.thresholds),
            "ap": dict(zip(key, map(float, self.ap))),
            "ap_pooled": dict(zip(key, map(float, self.ap_pooled))),
            "tp": dict(zip(key, map(int, tp))),
            "fp": dict(zip(key, map(int, fp))),
            "fn": dict(zip(key, map(int, fn))),
            "images": {i: s.score for i, s in zip(self.ids, self.images)},
        }


def score_dataset(
    pairs: Iterable[tuple[str, np.ndarray, np.ndarray | None]],
    thresholds: Sequence[float] = THRESHOLDS,
) -> DatasetScore:
    """Score a data set given (id, truth, prediction) triples.

    A prediction of None (an image missing from the predictions) counts as
    finding nothing: it scores 0 when the truth has nuclei.
    """
    ids, scores = [], []
    for image_id, truth, pred in pairs:
        if pred is None:
            pred = np.zeros_like(truth)
        ids.append(image_id)
        scores.append(score_image(truth, pred, thresholds))
    return DatasetScore(tuple(ids), tuple(scores), tuple(thresholds))
