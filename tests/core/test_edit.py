"""Each correction operation, on real samples: it does what it says and nothing else."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_nucleiseg import edit
from napari_nucleiseg.io import read_sample
from napari_nucleiseg.samples import sample_folder


@pytest.fixture(scope="module", params=["fluorescence", "histology"])
def labels(request) -> np.ndarray:
    return read_sample(sample_folder(request.param)).labels


def ids_of(labels: np.ndarray) -> set[int]:
    return set(np.unique(labels).tolist()) - {0}


def largest(labels: np.ndarray, k: int = 1) -> list[int]:
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return [int(i) for i in np.argsort(sizes)[::-1][:k]]


def touching_pair(labels: np.ndarray) -> tuple[int, int]:
    """Two nuclei that touch (4-neighbours), else the two largest."""
    a, b = labels[:, :-1], labels[:, 1:]
    touch = (a != b) & (a != 0) & (b != 0)
    if touch.any():
        return int(a[touch][0]), int(b[touch][0])
    return tuple(largest(labels, 2))


def unchanged_elsewhere(before, after, ids) -> bool:
    outside = ~np.isin(before, list(ids)) & ~np.isin(after, list(ids))
    return np.array_equal(before[outside], after[outside])


def test_inputs_are_not_modified(labels):
    copy = labels.copy()
    a, b = touching_pair(labels)
    edit.delete_labels(labels, a)
    edit.merge_labels(labels, [a, b])
    edit.fill_holes(labels)
    edit.remove_small(labels, 50)
    edit.renumber(labels)
    assert np.array_equal(labels, copy)


def test_delete_one_and_several(labels):
    a, b = largest(labels, 2)
    out = edit.delete_labels(labels, a)
    assert out.dtype == labels.dtype
    assert ids_of(out) == ids_of(labels) - {a}
    assert not np.any(out[labels == a])
    assert np.array_equal(out[labels != a], labels[labels != a])
    out = edit.delete_labels(labels, [a, b])
    assert ids_of(out) == ids_of(labels) - {a, b}


def test_merge_reduces_count_by_one_and_keeps_union(labels):
    a, b = touching_pair(labels)
    out = edit.merge_labels(labels, [b, a])
    assert len(ids_of(out)) == len(ids_of(labels)) - 1
    union = (labels == a) | (labels == b)
    assert np.array_equal(out == min(a, b), union)
    assert unchanged_elsewhere(labels, out, {a, b})
    out = edit.merge_labels(labels, [a, b], into=b)
    assert np.array_equal(out == b, union)


def test_merge_refuses_one_label_or_a_missing_one(labels):
    a = largest(labels)[0]
    with pytest.raises(ValueError, match="two different"):
        edit.merge_labels(labels, [a, a])
    with pytest.raises(ValueError, match="not in the image"):
        edit.merge_labels(labels, [a, int(labels.max()) + 5])


def far_points(mask: np.ndarray) -> tuple[tuple[int, int], tuple[int, int]]:
    """Two seed pixels at opposite ends of a nucleus's longest axis."""
    rows, cols = np.nonzero(mask)
    coords = np.stack([rows, cols], 1).astype(float)
    centre = coords.mean(0)
    _, _, vt = np.linalg.svd(coords - centre, full_matrices=False)
    proj = (coords - centre) @ vt[0]
    i, j = int(np.argmin(proj)), int(np.argmax(proj))
    # halfway between the centre and each end, still inside the nucleus
    p = [coords[k] for k in (i, j)]
    seeds = []
    for q in p:
        m = np.round((q + centre) / 2).astype(int)
        seeds.append(tuple(m) if mask[tuple(m)] else tuple(q.astype(int)))
    return seeds[0], seeds[1]


def test_split_with_two_seeds(labels):
    a = largest(labels)[0]
    seeds = far_points(labels == a)
    new = edit.next_free_label(labels)
    out = edit.split_label(labels, seeds)
    assert len(ids_of(out)) == len(ids_of(labels)) + 1
    assert out[seeds[0]] == a and out[seeds[1]] == new
    assert np.array_equal((out == a) | (out == new), labels == a)  # the same pixels, shared
    assert np.count_nonzero(out == new) > 0 and np.count_nonzero(out == a) > 0
    for part in (a, new):  # each half is one piece
        assert ndi.label(out == part)[1] == 1
    assert unchanged_elsewhere(labels, out, {a, new})


def test_split_refuses_bad_seeds(labels):
    a, b = largest(labels, 2)
    pa = tuple(np.argwhere(labels == a)[0])
    pb = tuple(np.argwhere(labels == b)[0])
    background = tuple(np.argwhere(labels == 0)[0])
    with pytest.raises(ValueError, match="different nuclei"):
        edit.split_label(labels, [pa, pb])
    with pytest.raises(ValueError, match="background"):
        edit.split_label(labels, [pa, background])
    with pytest.raises(ValueError, match="same pixel"):
        edit.split_label(labels, [pa, pa])
    with pytest.raises(ValueError, match="outside"):
        edit.split_label(labels, [pa, (-5, 3)])


def test_split_along_a_drawn_line(labels):
    a = largest(labels)[0]
    rows, cols = np.nonzero(labels == a)
    r_mid = int(round(rows.mean()))
    # a horizontal line through the middle, from beyond one side to beyond the other
    line = [(r_mid, cols.min() - 3), (r_mid, cols.max() + 3)]
    new = edit.next_free_label(labels)
    out = edit.split_label_along_line(labels, line)
    assert len(ids_of(out)) == len(ids_of(labels)) + 1
    assert np.array_equal((out == a) | (out == new), labels == a)
    upper, lower = (out == a) & (np.arange(out.shape[0])[:, None] < r_mid), out == new
    assert upper.any() and lower.any()
    assert unchanged_elsewhere(labels, out, {a, new})


def test_split_along_a_line_that_does_not_cut(labels):
    a = largest(labels)[0]
    r, c = np.argwhere(labels == a)[len(np.argwhere(labels == a)) // 2]
    with pytest.raises(ValueError, match="does not cut"):
        edit.split_label_along_line(labels, [(r, c), (r, c + 1)])
    background = np.argwhere(labels == 0)[0]
    with pytest.raises(ValueError, match="crosses no nucleus"):
        edit.split_label_along_line(labels, [tuple(background), tuple(background)])


def test_fill_holes_fills_background_only(labels):
    a = largest(labels)[0]
    rows, cols = np.nonzero(labels == a)
    r, c = int(np.median(rows)), int(np.median(cols))
    holed = labels.copy()
    holed[r - 1 : r + 2, c - 1 : c + 2][labels[r - 1 : r + 2, c - 1 : c + 2] == a] = 0
    assert np.count_nonzero(holed == a) < np.count_nonzero(labels == a)
    out = edit.fill_holes(holed)
    assert np.array_equal(out == a, ndi.binary_fill_holes(holed == a) | (holed == a))
    assert np.all(out[labels == a] == a)
    # only the chosen nuclei when ids are given
    other = [i for i in ids_of(labels) if i != a][:3]
    assert np.array_equal(edit.fill_holes(holed, other), holed)
    # a nucleus inside another's hole stays
    ring = np.zeros((9, 9), np.uint16)
    ring[1:8, 1:8] = 1
    ring[3:6, 3:6] = 0
    ring[4, 4] = 2
    filled = edit.fill_holes(ring)
    assert filled[4, 4] == 2 and np.all(filled[3:6, 3:6][ring[3:6, 3:6] == 0] == 1)


def test_remove_small(labels):
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    present = sizes[sizes > 0]
    cut = int(np.median(present))
    out = edit.remove_small(labels, cut)
    kept = {i for i in ids_of(labels) if sizes[i] >= cut}
    assert ids_of(out) == kept
    assert np.array_equal(out[np.isin(labels, list(kept))], labels[np.isin(labels, list(kept))])
    assert np.array_equal(edit.remove_small(labels, 0), labels)


def test_renumber_and_next_free_label(labels):
    a, b = largest(labels, 2)
    holey = edit.delete_labels(labels, [a, b])
    out, mapping = edit.renumber(holey)
    n = len(ids_of(holey))
    assert ids_of(out) == set(range(1, n + 1))
    assert out.dtype == labels.dtype
    for old, new in mapping.items():
        assert np.array_equal(out == new, holey == old)
    assert edit.next_free_label(out) == n + 1
    assert edit.next_free_label(np.zeros((4, 4), np.uint16)) == 1
    full = np.full((2, 2), 65535, np.uint16)
    with pytest.raises(ValueError, match="renumber"):
        edit.next_free_label(full)


def test_label_at(labels):
    a = largest(labels)[0]
    r, c = np.argwhere(labels == a)[0]
    assert edit.label_at(labels, (r + 0.2, c - 0.3)) == a
    assert edit.label_at(labels, (0, r, c)) == a  # leading coordinates ignored
    with pytest.raises(ValueError, match="outside"):
        edit.label_at(labels, (labels.shape[0] + 2, 0))


def test_bad_label_images_are_refused():
    with pytest.raises(ValueError, match="2-D"):
        edit.delete_labels(np.zeros((2, 3, 4), np.uint16), 1)
    with pytest.raises(ValueError, match="integers"):
        edit.fill_holes(np.zeros((3, 3), np.float32))


def test_sparse_huge_labels(labels):
    big = labels.astype(np.uint32) * 60_000_000 // 2
    compact, values = edit.compact_labels(big)
    assert np.array_equal(values[compact], big)
    a = largest(labels)[0]
    assert np.array_equal(
        edit.fill_holes(big), edit.fill_holes(labels).astype(np.uint32) * 30_000_000
    )
    assert ids_of(edit.remove_small(big, 10**9)) == set()
    assert edit.next_free_label(big) == int(big.max()) + 1
    assert np.array_equal(
        edit.delete_labels(big, a * 30_000_000) == 0, (labels == a) | (labels == 0)
    )
