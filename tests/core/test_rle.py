"""Kaggle run-length encoding: numbering on hand-made cases, exactness on every real mask."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import small_sample_folders
from napari_nucleiseg.errors import FileProblem
from napari_nucleiseg.io import (
    labels_to_rles,
    list_samples,
    read_submission,
    rle_decode,
    rle_encode,
    rles_to_labels,
    write_submission,
)
from napari_nucleiseg.io.stage1 import mask_paths


@pytest.mark.parametrize(
    "pixels,expected",
    [
        ([(0, 0)], "1 1"),  # first pixel is 1
        ([(1, 0)], "2 1"),  # numbering runs down a column first
        ([(0, 1)], "4 1"),  # then to the next column (3 rows)
        ([(0, 0), (1, 0), (2, 0)], "1 3"),  # a whole column is one run
        ([(2, 0), (0, 1)], "3 2"),  # a run continues from a column's bottom to the next top
        ([(0, 0), (2, 3)], "1 1 12 1"),  # last pixel of a 3x4 image is 12
        ([], ""),
    ],
)
def test_kaggle_numbering(pixels, expected):
    mask = np.zeros((3, 4), bool)
    for r, c in pixels:
        mask[r, c] = True
    assert rle_encode(mask) == expected
    np.testing.assert_array_equal(rle_decode(expected, (3, 4)), mask)


@pytest.mark.parametrize("bad", ["1", "0 2", "3 0", "1 3 2 1", "5 1 1 1", "12 2"])
def test_malformed_runs_are_refused(bad):
    with pytest.raises(ValueError):
        rle_decode(bad, (3, 4))


def _assert_masks_round_trip(folder):
    masks = [np.asarray(Image.open(p)) > 0 for p in mask_paths(folder)]
    for m in masks:
        np.testing.assert_array_equal(rle_decode(rle_encode(m), m.shape), m)
    labels = np.zeros(masks[0].shape, np.uint16)
    for i, m in enumerate(masks, start=1):
        labels[m & (labels == 0)] = i
    assert labels_to_rles(labels) == [rle_encode(labels == i) for i in range(1, len(masks) + 1)]


@pytest.mark.parametrize("folder", small_sample_folders(), ids=lambda p: p.name[:8])
def test_round_trip_on_real_masks(folder):
    _assert_masks_round_trip(folder)


@pytest.mark.slow
def test_round_trip_on_every_real_mask(shared_data):
    for folder in list_samples(shared_data / "stage1_train"):
        _assert_masks_round_trip(folder)


def test_submission_round_trip(tmp_path):
    a = np.zeros((6, 5), np.uint16)
    a[1:3, 1:4] = 7
    a[4:6, 0:2] = 2
    empty = np.zeros((4, 4), np.uint16)
    csv = tmp_path / "sub.csv"
    write_submission(csv, [("a", a), ("empty", empty)])
    lines = csv.read_text().splitlines()
    assert lines[0] == "ImageId,EncodedPixels"
    assert "empty," in lines and len(lines) == 4
    rows = read_submission(csv)
    assert rows["empty"] == []
    back = rles_to_labels(rows["a"], a.shape)
    # same nuclei, renumbered 1..n in label order
    assert {frozenset(zip(*np.nonzero(back == v))) for v in (1, 2)} == {
        frozenset(zip(*np.nonzero(a == v))) for v in (2, 7)
    }


def test_overlapping_submission_is_an_error(tmp_path):
    csv = tmp_path / "sub.csv"
    csv.write_text("ImageId,EncodedPixels\nx,1 4\nx,3 2\n")
    with pytest.raises(FileProblem, match="overlaps"):
        rles_to_labels(read_submission(csv)["x"], (3, 4), source=csv)


def test_bad_header_and_unwritable_target(tmp_path):
    csv = tmp_path / "sub.csv"
    csv.write_text("id,rle\n")
    with pytest.raises(FileProblem, match="header"):
        read_submission(csv)
    target = tmp_path / "missing_dir" / "sub.csv"
    with pytest.raises(FileProblem, match="cannot be written"):
        write_submission(target, [("a", np.ones((2, 2), np.uint16))])
    assert not (tmp_path / "missing_dir").exists()
