"""Targets from labels, and the seeded watershed that turns maps back into nuclei."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.morphology import local_maxima, reconstruction
from skimage.segmentation import watershed

from napari_nucleiseg import postprocess
from napari_nucleiseg.io import read_sample
from napari_nucleiseg.metrics import score_image
from napari_nucleiseg.postprocess import (
    PostprocessConfig,
    labels_from_maps,
    split_by_shape,
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


def test_no_tuned_min_size_drops_a_nucleus_6_px_across():
    """Whatever the tuner chooses, nuclei 6 px across (a low magnification) stay."""
    from napari_nucleiseg.training.tune import MIN_SIZES

    tiny = disks([(y, x) for y in range(6, 58, 12) for x in range(6, 74, 12)], radius=3)
    assert np.bincount(tiny.ravel())[1:].min() > max(MIN_SIZES)
    body, border = targets_from_labels(tiny)
    kept = labels_from_maps(body, border, PostprocessConfig(min_size=max(MIN_SIZES)))
    assert kept.max() == tiny.max()


def test_min_mean_prob_drops_unsure_objects_of_any_size():
    """Texture the network is unsure of (body 0.6, no seed) goes however large it is; a
    confident nucleus 6 px across stays; 0 keeps both."""
    sure = disks([(30, 20)], radius=3) > 0
    faint = disks([(32, 55)], radius=14) > 0
    body = np.where(sure, 1.0, np.where(faint, 0.6, 0.0)).astype(np.float32)
    every = labels_from_maps(body, None, PostprocessConfig(min_size=1))
    assert every.max() == 2  # the faint blob is an unseeded nucleus of its own
    kept = labels_from_maps(body, None, PostprocessConfig(min_size=1, min_mean_prob=0.8))
    assert kept.max() == 1 and kept[30, 20] == 1 and not kept[faint].any()
    assert postprocess.drop_unsure(every, body, 0.0) is every


def test_a_checkpoint_of_before_the_mean_bound_keeps_every_nucleus():
    from napari_nucleiseg.models import ModelConfig

    saved = ModelConfig("unet").to_dict()
    del saved["postprocess"]["min_mean_prob"]  # as written before the option existed
    assert ModelConfig.from_dict(saved).postprocess.min_mean_prob == 0.0


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


_EIGHT = np.ones((3, 3), dtype=bool)


def _split_reference(seed_labels: np.ndarray, depth: float, sigma: float = 1.0) -> np.ndarray:
    """split_by_shape as it was, one seed at a time: what the packed version must equal."""
    out = np.asarray(seed_labels).astype(np.int64)
    next_label = int(out.max(initial=0)) + 1
    for label, box in enumerate(ndi.find_objects(out), start=1):
        if box is None:
            continue
        box = tuple(slice(max(b.start - 1, 0), b.stop + 1) for b in box)
        own = out[box] == label
        dist = ndi.gaussian_filter(ndi.distance_transform_edt(own).astype(np.float32), sigma)
        if dist.max() <= depth:  # too thin to hold a dome that high
            continue
        # one patch of 3x3 maxima means one regional maximum, so one dome: most seeds
        tops = (dist == ndi.maximum_filter(dist, size=3)) & own
        if ndi.label(tops, structure=_EIGHT)[1] < 2:
            continue
        domes = local_maxima(reconstruction(dist - depth, dist), connectivity=2) & own
        peaks, n = ndi.label(domes, structure=_EIGHT)
        if n < 2:
            continue
        pieces = watershed(-dist, peaks, mask=own)
        # piece 1 keeps the seed's label, pieces 2..n take new ones
        relabel = np.concatenate([[0, label], np.arange(next_label, next_label + n - 1)])
        out[box][own] = relabel[pieces[own]]
        next_label += n - 1
    return out


def _disk(labels: np.ndarray, y: float, x: float, r: float, label: int) -> None:
    yy, xx = np.mgrid[: labels.shape[0], : labels.shape[1]]
    labels[(yy - y) ** 2 + (xx - x) ** 2 <= r * r] = label


def _synthetic_seeds() -> dict[str, np.ndarray]:
    """Seed images of every awkward kind for the comparison with the reference."""
    cases = {"empty": np.zeros((40, 50), np.int32), "full": np.ones((30, 40), np.int32)}
    cases["halves"] = np.ones((30, 40), np.int32)
    cases["halves"][:, 20:] = 2
    cases["one pixel image"] = np.ones((1, 1), np.int32)
    cases["one row"] = np.array([[0, 1, 1, 1, 0, 2, 2, 0, 3]], np.int32)
    disks = np.zeros((96, 128), np.int32)
    for i, (y, x, r) in enumerate(
        [(14, 14, 2), (14, 40, 4), (20, 80, 8), (60, 25, 12), (70, 90, 16)]
    ):
        _disk(disks, y, x, r, i + 1)
    cases["disks"] = disks
    pairs = np.zeros((100, 160), np.int32)
    _disk(pairs, 25, 25, 12, 1)  # overlapping, unequal: a neck
    _disk(pairs, 25, 47, 10, 1)
    _disk(pairs, 25, 100, 10, 2)  # overlapping, equal: tied peaks
    _disk(pairs, 25, 120, 10, 2)
    _disk(pairs, 75, 25, 11, 3)  # a dumbbell: two disks and a thin bar
    _disk(pairs, 75, 75, 9, 3)
    pairs[74:77, 25:75] = 3
    _disk(pairs, 75, 110, 6, 4)  # three in a row
    _disk(pairs, 75, 125, 7, 4)
    _disk(pairs, 75, 141, 6, 4)
    cases["pairs and dumbbell"] = pairs
    tiny = np.zeros((30, 40), np.int32)
    tiny[3, 3] = 1  # 1 px
    tiny[3, 8:10] = 2  # 2 px
    tiny[8:10, 3] = 3
    tiny[8, 8:10], tiny[9, 8] = 4, 4  # 3 px, an L
    tiny[14:16, 3:5] = 5  # 4 px
    tiny[14:17, 10], tiny[15, 9:12] = 6, 6  # 5 px, a plus
    tiny[20, 20], tiny[21, 21] = 7, 8  # touching diagonally
    tiny[20:23, 30:33] = 9
    tiny[21, 31] = 10  # a seed inside another
    cases["tiny"] = tiny
    thin = np.zeros((60, 80), np.int32)
    thin[5, 5:45] = 1  # 1 px wide
    thin[10:12, 5:45] = 2  # 2 px
    thin[15:18, 5:45] = 3  # 3 px
    thin[22:55, 60] = 4
    thin[22:55, 64:66] = 5
    thin[22:55, 70:73] = 6
    for i in range(25):
        thin[25 + i, 5 + i : 7 + i] = 7  # diagonal
        thin[25 + i, 50 - i] = 8  # anti-diagonal, 1 px
    cases["thin"] = thin
    edges = np.zeros((64, 72), np.int32)
    for i, (y, x) in enumerate(
        [(0, 0), (0, 71), (63, 0), (63, 71), (0, 30), (63, 40), (30, 0), (30, 71)]
    ):
        _disk(edges, y, x, 7, i + 1)
    edges[1:4, 12:20] = 9  # one pixel off an edge: its box just fits
    edges[20:28, 1:3] = 10
    edges[60:63, 52:60] = 11
    edges[44:52, 69:71] = 12
    _disk(edges, 32, 36, 10, 13)
    edges[10:54, 35:38] = 13
    cases["edges and corners"] = edges
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:200, :240]
    scattered = np.zeros((200, 240), np.int32)
    for label in range(1, 121):  # ellipses of many sizes; later ones overwrite, cutting some
        y, x = rng.uniform(-5, 205), rng.uniform(-5, 245)
        a, b = rng.uniform(0.5, 16, 2)
        t = rng.uniform(0, np.pi)
        u = (yy - y) * np.cos(t) + (xx - x) * np.sin(t)
        v = (xx - x) * np.cos(t) - (yy - y) * np.sin(t)
        scattered[(u / a) ** 2 + (v / b) ** 2 <= 1] = label
    cases["scattered ellipses"] = scattered
    noise = ndi.gaussian_filter(rng.normal(size=(180, 200)), 4)
    cases["ragged blobs"] = ndi.label(noise > 0.02)[0]
    gaps = np.zeros((40, 60), np.int32)
    _disk(gaps, 20, 12, 9, 7)
    _disk(gaps, 20, 40, 9, 50)
    _disk(gaps, 20, 55, 6, 7)  # label 7 in two parts
    cases["gaps and two parts"] = gaps
    squares = np.zeros((12, 40), np.int32)
    squares[5:7, 5:7] = squares[5:7, 10:12] = 1  # one seed in two parts: a flat cap at depth 0.4
    squares[0:2, 30:32] = squares[0:2, 35:37] = 2  # the same at the edge
    cases["two squares"] = squares
    return cases


_CASES = _synthetic_seeds()


@pytest.mark.parametrize("sigma", [1.0, 2.0, 0.5, 3.0])
@pytest.mark.parametrize("depth", [0.5, 2.0, 4.0])
@pytest.mark.parametrize("name", list(_CASES))
def test_split_by_shape_equals_one_seed_at_a_time(name, depth, sigma):
    seeds = _CASES[name]
    split = split_by_shape(seeds, depth, sigma)
    assert split.dtype == np.int64
    np.testing.assert_array_equal(split, _split_reference(seeds, depth, sigma))


@pytest.mark.parametrize("depth", [0.1, 0.25, 0.4])
@pytest.mark.parametrize("name", ["tiny", "thin", "two squares", "edges and corners"])
def test_split_by_shape_equals_one_seed_at_a_time_on_small_seeds(name, depth):
    seeds = _CASES[name]
    np.testing.assert_array_equal(split_by_shape(seeds, depth), _split_reference(seeds, depth))


def test_flat_caps_have_no_domes():
    # alone, a box whose reconstruction is flat all over has no maxima; packed, it must not
    # either (else the two parts of seed 1 would be cut apart)
    seeds = _CASES["two squares"]
    assert np.all(split_by_shape(seeds, 0.4)[seeds == 1] == 1)
    box = (slice(4, 8), slice(4, 13))
    dist = ndi.gaussian_filter(ndi.distance_transform_edt(seeds[box] == 1).astype(np.float32), 1)
    cap = reconstruction(dist - 0.4, dist)
    assert cap.min() == cap.max()
    assert postprocess._dome_counts([cap, cap], [seeds[box] == 1] * 2) == [0, 0]


@pytest.mark.parametrize("sigma", [1.0, 2.0, 0.5, (1.0, 2.0)])
def test_packed_distances_equal_one_box_at_a_time(sigma):
    # bit for bit, not only the labels they lead to (small errors rarely change those)
    for name, seeds in _CASES.items():
        out = seeds.astype(np.int64)
        inner, lone = {}, {}
        for label, box in enumerate(ndi.find_objects(out), start=1):
            if box is None or any(b.start == 0 or b.stop == n for b, n in zip(box, out.shape)):
                continue
            inner[label] = box = tuple(slice(b.start - 1, b.stop + 1) for b in box)
            own = out[box] == label
            dist = ndi.gaussian_filter(ndi.distance_transform_edt(own).astype(np.float32), sigma)
            if postprocess._may_split(dist, own, 0.5):
                lone[label] = dist
        packed = postprocess._split_candidates(out, inner, 0.5, sigma)
        assert packed.keys() == lone.keys(), name
        for label, dist in lone.items():
            assert packed[label].dtype == np.float32
            np.testing.assert_array_equal(packed[label], dist, err_msg=f"{name} {label}")


def test_split_by_shape_cuts_the_synthetic_necks():
    # the comparison above means something only if some seeds are cut
    assert split_by_shape(_CASES["pairs and dumbbell"], 2.0).max() > 4
    assert split_by_shape(_CASES["scattered ellipses"], 0.5).max() > 120


def test_split_by_shape_in_many_small_canvases(monkeypatch):
    # canvases of a few boxes each, as on a huge image: the same seeds
    monkeypatch.setattr(postprocess, "_CANVAS_PIXELS", 2000)
    for name in ("scattered ellipses", "ragged blobs", "tiny", "pairs and dumbbell"):
        seeds = _CASES[name]
        np.testing.assert_array_equal(split_by_shape(seeds, 1.0), _split_reference(seeds, 1.0))


def test_symmetric_indices_extend_as_scipy_reflects():
    for n in range(1, 7):
        for reach in range(0, 10):
            line = np.arange(n, dtype=float)
            padded = np.pad(line, reach, mode="symmetric")
            assert np.array_equal(line[postprocess._symmetric(n, reach)], padded), (n, reach)


@pytest.fixture(scope="module")
def real_seeds() -> list[np.ndarray]:
    """Seed labels of the shipped model on the shipped samples, as labels_from_maps makes them."""
    from napari_nucleiseg.inference import drain, predict_maps
    from napari_nucleiseg.models import load_model

    model, config = load_model("dsb2018-unet")
    post = config.postprocess
    out = []
    for kind in ("fluorescence", "histology"):
        image = read_sample(sample_folder(kind)).image
        maps = drain(predict_maps(model, config, image))
        body, border = maps[0], maps[1:].max(0)
        seeds = (body * (1 - border) > post.seed_threshold) & (body > post.prob_threshold)
        labels = ndi.label(seeds)[0]
        out += [labels, postprocess.drop_small(labels, post.min_seed_size)]
    return out


@pytest.mark.parametrize("sigma", [1.0, 2.0])
@pytest.mark.parametrize("depth", [0.5, 1.0, 2.0, 4.0])
def test_split_by_shape_equals_one_seed_at_a_time_on_real_seeds(real_seeds, depth, sigma):
    for seeds in real_seeds:
        np.testing.assert_array_equal(
            split_by_shape(seeds, depth, sigma), _split_reference(seeds, depth, sigma)
        )
