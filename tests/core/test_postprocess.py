"""Targets from labels, and the seeded watershed that turns maps back into nuclei."""

from __future__ import annotations

import time

import numpy as np
import pytest

from napari_nucleiseg.io import read_sample
from napari_nucleiseg.metrics import score_image
from napari_nucleiseg.postprocess import (
    PostprocessConfig,
    labels_from_maps,
    targets_from_labels,
    touching_border,
)
from napari_nucleiseg.samples import sample_folder


def disks(centres, radius=10, shape=(64, 80)) -> np.ndarray:
    """Instance labels of disks; later disks overwrite earlier ones where they overlap."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.uint16)
    for i, (y, x) in enumerate(centres, start=1):
        labels[(yy - y) ** 2 + (xx - x) ** 2 <= radius**2] = i
    return labels


def test_targets_shapes_and_values():
    labels = disks([(30, 25), (30, 44)])  # touching along x = 34/35
    t = targets_from_labels(labels, ("body", "border", "contour"))
    assert t.shape == (3, 64, 80) and t.dtype == np.float32
    assert set(np.unique(t)) <= {0.0, 1.0}
    assert np.array_equal(t[0] > 0, labels > 0)
    border = t[1] > 0
    assert border[30, 34] and border[30, 35]  # where they touch
    assert not border[30, 15] and not border[10, 10]  # an outer edge, the background
    assert t[2][30, 15] and not t[2][30, 25]  # contour on the edge, not in the middle


def test_isolated_nucleus_has_no_border():
    assert not touching_border(disks([(30, 30)])).any()
    assert not touching_border(np.zeros((8, 8), int)).any()


def test_touching_disks_split_into_two():
    labels = disks([(30, 25), (30, 44)])
    body, border = targets_from_labels(labels)
    # without the border they are one blob
    assert labels_from_maps(body, None).max() == 1
    pred = labels_from_maps(body, border)
    assert pred.max() == 2
    assert score_image(labels, pred).ap[0] == 1.0  # both matched at IoU 0.5
    assert pred.dtype == np.uint16


def test_shape_split_cuts_a_merged_pair_at_its_neck():
    # two overlapping disks (unequal: equal peaks would both count as the highest)
    # predicted as one body with no border between them
    pair = (disks([(30, 28)], radius=12) > 0) | (disks([(30, 50)], radius=11) > 0)
    body = pair.astype(np.float32)
    assert labels_from_maps(body, None).max() == 1
    split = labels_from_maps(body, None, PostprocessConfig(split_depth=1.0))
    assert split.max() == 2
    assert split[30, 22] != split[30, 56]  # one nucleus each side of the neck
    assert np.count_nonzero(split) == np.count_nonzero(pair)  # the mask is kept whole
    # a single round nucleus and an elongated one stay whole
    one = (disks([(30, 40)], radius=14) > 0).astype(np.float32)
    assert labels_from_maps(one, None, PostprocessConfig(split_depth=1.0)).max() == 1
    yy, xx = np.mgrid[:64, :80]
    ellipse = (((yy - 32) / 9.0) ** 2 + ((xx - 40) / 30.0) ** 2 <= 1).astype(np.float32)
    assert labels_from_maps(ellipse, None, PostprocessConfig(split_depth=1.0)).max() == 1
    # a depth beyond the neck's (the smaller peak rises about 6 px above it) keeps the pair whole
    assert labels_from_maps(body, None, PostprocessConfig(split_depth=7.0)).max() == 1


def test_shape_split_leaves_single_and_already_split_nuclei_alone():
    yy, xx = np.mgrid[:64, :80].astype(float)
    # a rotated ellipse centred on a pixel corner: its top pixels tie, it is still one nucleus
    u, v = ((yy - 30.5) + (xx - 40.5)) / np.sqrt(2), ((yy - 30.5) - (xx - 40.5)) / np.sqrt(2)
    ellipse = ((u / 14.0) ** 2 + (v / 6.0) ** 2 <= 1).astype(np.float32)
    for depth in (0.5, 1.0, 2.0):
        assert labels_from_maps(ellipse, None, PostprocessConfig(split_depth=depth)).max() == 1, (
            depth
        )
    # a big and a small nucleus that the border map already separates keep their sizes
    labels = np.zeros((64, 80), np.uint16)
    labels[(yy - 32) ** 2 + (xx - 30) ** 2 <= 14**2] = 1
    labels[((yy - 32) ** 2 + (xx - 50) ** 2 <= 7**2) & (labels == 0)] = 2
    body, border = targets_from_labels(labels)
    body = body + np.random.default_rng(0).normal(0, 0.01, body.shape).astype(np.float32)
    plain = labels_from_maps(body, border)
    split = labels_from_maps(body, border, PostprocessConfig(split_depth=1.0))
    assert plain.max() == split.max() == 2
    np.testing.assert_array_equal(split, plain)


def test_min_size_removes_tiny_objects():
    labels = disks([(30, 25)], radius=10)
    labels[5:7, 70:72] = 2  # 4 pixels
    body, border = targets_from_labels(labels)
    assert labels_from_maps(body, border, PostprocessConfig(min_size=1, min_seed_size=1)).max() == 2
    kept = labels_from_maps(body, border, PostprocessConfig(min_size=10))
    assert kept.max() == 1 and kept[5, 70] == 0


def test_unseeded_blob_still_becomes_a_nucleus():
    body = np.zeros((40, 40), np.float32)
    body[10:20, 10:20] = 0.6  # above the mask threshold, below the seed threshold
    labels = labels_from_maps(body, None, PostprocessConfig(prob_threshold=0.5, seed_threshold=0.7))
    assert labels.max() == 1 and (labels > 0).sum() == 100


def test_perfect_maps_recover_a_real_image_fast():
    sample = read_sample(sample_folder("fluorescence"))
    body, border = targets_from_labels(sample.labels)
    pred = labels_from_maps(body, border)
    assert score_image(sample.labels, pred).score > 0.9  # 0.94: one nucleus with a neck splits
    # re-running with new thresholds is cheap on a 520x696 image
    big = np.tile(body, (3, 3))[:520, :696]
    big_border = np.tile(border, (3, 3))[:520, :696]
    labels_from_maps(big, big_border)
    start = time.perf_counter()
    labels_from_maps(big, big_border, PostprocessConfig(prob_threshold=0.4))
    assert time.perf_counter() - start < 1.0  # measured ~0.03 s; loose for slow CI


def test_bad_maps_are_rejected():
    with pytest.raises(ValueError, match="must match"):
        labels_from_maps(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="expected"):
        labels_from_maps(np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="unknown maps"):
        targets_from_labels(np.zeros((4, 4), int), ("body", "centre"))
    with pytest.raises(ValueError, match="integers"):
        targets_from_labels(np.zeros((4, 4), float))
