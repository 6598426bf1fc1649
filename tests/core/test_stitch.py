"""Post-processing chunk by chunk gives exactly the nuclei of the whole maps (stitch.py)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from scipy import ndimage as ndi

from conftest import small_sample_folders
from napari_nucleiseg.inference import drain, predict_maps
from napari_nucleiseg.io import read_sample
from napari_nucleiseg.models import load_model
from napari_nucleiseg.pipeline import Cancelled, labels_from_predicted
from napari_nucleiseg.postprocess import PostprocessConfig, labels_from_maps, touching_border
from napari_nucleiseg.stitch import canonical, stitched_labels


def synthetic_maps(seed: int = 0, side: int = 300) -> np.ndarray:
    """Body and border maps of disks of 2 to 30 px radius (touching pairs, a clump, a
    snake of disks longer than any chunk), soft-edged as a network's are."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((side, side), np.int32)
    yy, xx = np.mgrid[:side, :side]
    n = 0

    def disk(cy, cx, r):
        nonlocal n
        n += 1
        labels[((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (labels == 0)] = n

    for _ in range(60):
        disk(*rng.integers(0, side, 2), rng.integers(2, 31))
    for k in range(20):  # a snake of touching disks across the image: one huge clump
        disk(side // 2 + int(40 * np.sin(k / 3)), 10 + k * (side - 20) // 20, 9)
    for cy, cx in [(64, 64), (100, 100), (128, 0), (0, 128), (299, 150)]:  # on chunk lines
        disk(cy, cx, 6)
        disk(cy, cx + 11, 6)
    return maps_of(labels, rng)


def serpent_maps(side: int = 600) -> np.ndarray:
    """Maps of a serpent of touching 17-px disks winding over the whole image (one mask
    component as large as the image: confluent nuclei) and of lone disks between its bends."""
    rng = np.random.default_rng(7)
    labels = np.zeros((side, side), np.int32)
    yy, xx = np.mgrid[:side, :side]
    centres = []
    for k, y in enumerate(range(20, side - 20, 60)):
        xs = list(range(20, side - 20, 16))
        centres += [(y, x) for x in (xs if k % 2 == 0 else xs[::-1])]
        turn = xs[-1] if k % 2 == 0 else xs[0]
        centres += [(y + d, turn) for d in range(16, 60, 16) if y + 60 < side - 20]
    centres += [(y + 30, x + 8) for y in range(20, side - 80, 60) for x in range(60, side - 60, 90)]
    for n, (cy, cx) in enumerate(centres, start=1):
        r = 8 + rng.uniform(-0.4, 0.4)
        labels[((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (labels == 0)] = n
    return maps_of(labels, rng)


def maps_of(labels: np.ndarray, rng) -> np.ndarray:
    """Body and border maps of ``labels``, soft-edged and noisy as a network's are."""
    body = ndi.gaussian_filter((labels > 0).astype(np.float32), 1.5)
    body += rng.normal(0, 0.05, body.shape).astype(np.float32)
    border = ndi.gaussian_filter(touching_border(labels, 2).astype(np.float32), 1.0) * 1.5
    return np.clip(np.stack([body, border]), 0, 1).astype(np.float32)


def whole(maps: np.ndarray, post: PostprocessConfig) -> np.ndarray:
    return canonical(labels_from_maps(maps[0], maps[1:].max(axis=0), post))


def stitched(maps: np.ndarray, post: PostprocessConfig, **kwargs) -> tuple[np.ndarray, int]:
    out = np.zeros(maps.shape[1:], np.uint32)
    n = drain(stitched_labels(maps, out, post, **kwargs))
    return out, n


@pytest.mark.parametrize(("split_depth", "min_mean_prob"), [(0.0, 0.0), (1.0, 0.0), (1.0, 0.85)])
@pytest.mark.parametrize(("chunk", "halo"), [(64, 40), (100, 8), (17, 3), (128, 1), (512, 16)])
def test_chunks_give_the_nuclei_of_the_whole_exactly(chunk, halo, split_depth, min_mean_prob):
    maps = synthetic_maps()
    post = PostprocessConfig(
        split_depth=split_depth, min_size=10, min_seed_size=5, min_mean_prob=min_mean_prob
    )
    expected = whole(maps, post)
    assert expected.max() > 60  # nuclei, clumps and the snake are there
    got, n = stitched(maps, post, chunk=chunk, halo=halo)
    assert n == expected.max()
    np.testing.assert_array_equal(got, expected)


def test_a_clump_wider_than_chunk_and_halo_is_resolved_whole():
    """The snake spans the image: no chunk window holds it, its own window does."""
    maps = synthetic_maps(seed=3)
    post = PostprocessConfig()
    comps, _ = ndi.label(maps[0] > post.prob_threshold)
    assert max(s[1].stop - s[1].start for s in ndi.find_objects(comps)) > 250
    got, _ = stitched(maps, post, chunk=50, halo=4)
    np.testing.assert_array_equal(got, whole(maps, post))


def test_maps_and_labels_on_disk_as_zarr(tmp_path):
    zarr = pytest.importorskip("zarr")
    maps = synthetic_maps(seed=5, side=257)
    store = zarr.create_array(
        str(tmp_path / "maps.zarr"), shape=maps.shape, chunks=(1, 64, 64), dtype="f4"
    )
    store[:] = maps
    out = zarr.create_array(
        str(tmp_path / "labels.zarr"),
        shape=maps.shape[1:],
        chunks=(64, 64),
        dtype="u4",
        fill_value=0,
    )
    n = drain(stitched_labels(store, out, chunk=64, halo=12))
    expected = whole(maps, PostprocessConfig())
    assert n == expected.max()
    np.testing.assert_array_equal(out[:], expected)


def test_real_maps_of_a_mosaic_stitch_exactly():
    """Maps of the network on a 2x2 mosaic of the real samples, post-processed in 200-px
    chunks, against the whole: the same nuclei, with the checkpoint's own thresholds."""
    model, config = load_model("dsb2018-unet")
    images = [read_sample(f).image for f in small_sample_folders()]
    grey = [im[..., :3].mean(axis=-1) if im.ndim == 3 else im for im in images]
    side = 256
    tiles = [g[:side, :side] for g in grey if min(g.shape[:2]) >= side]
    mosaic = np.block([[tiles[0], tiles[1 % len(tiles)]], [tiles[2 % len(tiles)], tiles[0][::-1]]])
    maps = drain(predict_maps(model, config, mosaic.astype(np.float32)))
    expected = canonical(labels_from_predicted(maps, config))
    assert expected.max() > 20
    got, _ = stitched(maps, config.postprocess, chunk=200, halo=24)
    np.testing.assert_array_equal(got, expected)


def test_refuses_labels_too_narrow_and_stops_when_told():
    maps = synthetic_maps(side=300)
    with pytest.raises(ValueError, match="reach at least halo"):
        drain(stitched_labels(maps, np.zeros((300, 300), np.uint32), halo=8, reach=4))
    with pytest.raises(ValueError, match="uint16 cannot name"):
        drain(stitched_labels(maps, np.zeros((300, 300), np.uint16)))
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        drain(stitched_labels(maps, np.zeros((300, 300), np.uint32), stop=stop))


@pytest.mark.parametrize("split_depth", [0.0, 1.0])
def test_a_clump_beyond_the_bound_is_resolved_in_pieces_and_said(monkeypatch, split_depth):
    """A mask connected over the whole image, beyond MAX_CLUMP_PIXELS (here lowered), is
    resolved in pieces reaching past its nuclei: the nuclei of the whole, exactly, no pixel
    left marked open, and a ClumpWarning that says where."""
    import napari_nucleiseg.stitch as stitch

    maps = serpent_maps()
    post = PostprocessConfig(split_depth=split_depth)
    expected = whole(maps, post)
    comps, _ = ndi.label(maps[0] > post.prob_threshold)
    rows, cols = ndi.find_objects(comps)[0]  # the serpent, over the whole image
    assert rows.stop - rows.start > 540 and cols.stop - cols.start > 540
    assert expected.max() > 400
    monkeypatch.setattr(stitch, "MAX_CLUMP_PIXELS", 200 * 200)
    with pytest.warns(
        stitch.ClumpWarning, match=r"near rows \d+-\d+, columns \d+-\d+\) were resolved in 36 "
    ):
        got, n = stitched(maps, post, chunk=100, halo=8, reach=32)
    assert n == expected.max() and got.max() == n
    np.testing.assert_array_equal(got, expected)


def test_pieces_too_narrow_for_a_nucleus_change_nuclei_at_their_seams(monkeypatch):
    """Pieces reaching less than a nucleus cut the ones on their seams: still no pixel is
    left marked open, nothing off the clump changes, and the serpent's nuclei keep most of
    their pixels (what the warning's 'may differ' means)."""
    import napari_nucleiseg.stitch as stitch

    maps = serpent_maps()
    post = PostprocessConfig()
    expected = whole(maps, post)
    comps, _ = ndi.label(maps[0] > post.prob_threshold)
    serpent = comps == 1
    monkeypatch.setattr(stitch, "MAX_CLUMP_PIXELS", 200 * 200)
    with pytest.warns(stitch.ClumpWarning):
        got, n = stitched(maps, post, chunk=100, halo=4, reach=4)
    assert got.max() == n and np.unique(got).size == n + 1
    off = canonical(np.where(serpent, 0, got))
    np.testing.assert_array_equal(off, canonical(np.where(serpent, 0, expected)))
    assert not np.array_equal(got, expected)  # the seams did change something
    kept = np.mean([(got[expected == k] > 0).mean() for k in np.unique(expected[serpent])[1:]])
    assert kept > 0.9
