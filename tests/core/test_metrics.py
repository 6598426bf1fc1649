"""The DSB2018 metric: hand-computed cases, a brute-force reference, real labels."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import small_sample_folders
from napari_nucleiseg.io import read_sample
from napari_nucleiseg.metrics import THRESHOLDS, iou_matrix, score_dataset, score_image


def square(shape, r0, r1, c0, c1, value=1, into=None):
    out = np.zeros(shape, np.uint16) if into is None else into
    out[r0:r1, c0:c1] = value
    return out


def test_perfect_and_empty():
    truth = square((20, 20), 2, 8, 2, 8)
    square((20, 20), 10, 15, 10, 18, 2, into=truth)
    assert score_image(truth, truth).score == 1.0
    assert score_image(truth, np.zeros_like(truth)).score == 0.0
    assert score_image(np.zeros_like(truth), truth).score == 0.0
    empty = np.zeros((5, 5), np.uint16)
    assert score_image(empty, empty).score == 1.0  # nothing to find, nothing found


def test_one_nucleus_split_in_two():
    truth = square((20, 20), 0, 10, 0, 10)
    pred = square((20, 20), 0, 10, 0, 6, 1)
    square((20, 20), 0, 10, 6, 10, 2, into=pred)
    s = score_image(truth, pred)
    # the larger half has IoU 60/100 = 0.6: it matches at 0.5 and 0.55 only
    np.testing.assert_array_equal(s.tp, [1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(s.fp, [1, 1, 2, 2, 2, 2, 2, 2, 2, 2])
    np.testing.assert_array_equal(s.fn, [0, 0, 1, 1, 1, 1, 1, 1, 1, 1])
    assert s.score == pytest.approx((0.5 + 0.5) / 10, abs=1e-12)


def test_shifted_nucleus_with_known_iou():
    truth = square((30, 30), 5, 15, 5, 15)
    pred = square((30, 30), 5, 15, 7, 17)  # IoU = 80 / 120 = 2/3
    assert iou_matrix(truth, pred)[0, 0] == pytest.approx(2 / 3, abs=1e-15)
    assert score_image(truth, pred).score == pytest.approx(4 / 10, abs=1e-12)  # 0.5 .. 0.65


@pytest.mark.parametrize("width,n_matched", [(10, 0), (15, 5), (11, 1), (17, 7)])
def test_iou_exactly_at_a_threshold_does_not_match(width, n_matched):
    truth = square((20, 20), 0, 20, 0, 20)
    pred = square((20, 20), 0, 20, 0, width)  # IoU = width / 20: 0.5, 0.75, 0.55, 0.85
    assert score_image(truth, pred).tp.sum() == n_matched
    assert score_image(truth, pred).score == pytest.approx(n_matched / 10, abs=1e-12)


def brute_force_score(truth, pred):
    t_ids = [v for v in np.unique(truth) if v]
    p_ids = [v for v in np.unique(pred) if v]
    iou = np.zeros((len(t_ids), len(p_ids)))
    for i, a in enumerate(t_ids):
        for j, b in enumerate(p_ids):
            inter = np.sum((truth == a) & (pred == b))
            iou[i, j] = inter / np.sum((truth == a) | (pred == b))
    aps = []
    for t in THRESHOLDS:
        tp = int(np.sum(iou > t))
        aps.append(tp / (len(t_ids) + len(p_ids) - tp))
    return float(np.mean(aps))


@pytest.mark.parametrize("folder", small_sample_folders()[:2], ids=lambda p: p.name[:8])
def test_real_labels_against_brute_force_and_renumbering(folder):
    truth = read_sample(folder).labels
    rng = np.random.default_rng(0)
    # a plausible prediction: every nucleus shifted by one pixel, a few dropped, one merged
    pred = np.roll(truth, 1, axis=1).astype(np.int32)
    for v in rng.choice(np.unique(truth)[1:], 3, replace=False):
        pred[pred == v] = 0
    a, b = np.unique(pred)[-2:]
    pred[pred == a] = b
    expected = brute_force_score(truth, pred)
    assert score_image(truth, pred).score == pytest.approx(expected, abs=1e-6)
    perm = np.concatenate([[0], rng.permutation(np.arange(1, 5000)) + 10_000])
    assert score_image(perm[truth], perm[pred]).score == pytest.approx(expected, abs=1e-12)


def test_dataset_summaries():
    truth = square((20, 20), 0, 10, 0, 10)
    good = truth.copy()
    half = square((20, 20), 0, 10, 0, 7)  # IoU 0.7: matches at 0.5 .. 0.65
    result = score_dataset([("a", truth, good), ("b", truth, half), ("c", truth, None)])
    assert result.score == pytest.approx((1.0 + 0.4 + 0.0) / 3, abs=1e-12)
    np.testing.assert_allclose(result.ap[:4], [(1 + 1 + 0) / 3] * 4)
    tp, fp, fn = result.counts
    assert tp[0] == 2 and fp[0] == 0 and fn[0] == 1
    assert result.ap_pooled[0] == pytest.approx(2 / 3)
    d = result.as_dict()
    assert d["images"] == {"a": 1.0, "b": pytest.approx(0.4), "c": 0.0}
    assert set(d["ap"]) == {f"{t:.2f}" for t in THRESHOLDS}


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="must match"):
        score_image(np.zeros((3, 3), int), np.zeros((3, 4), int))
