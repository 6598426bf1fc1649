"""Joint augmentation keeps image and labels aligned; image-only jitter leaves labels alone."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from napari_nucleiseg.io import Sample, read_sample
from napari_nucleiseg.samples import sample_folder
from napari_nucleiseg.training import (
    AugmentConfig,
    CropDataset,
    jitter_stain,
    random_crop,
    random_matrix,
    warp,
)

GEOMETRY_ONLY = replace(
    AugmentConfig(), contrast=(1.0, 1.0), brightness=0.0, gamma=(1.0, 1.0), noise=0.0, blur=0.0
)


def blobs(shape=(120, 150), n=12, seed=0) -> np.ndarray:
    """Instance labels of random non-overlapping ellipses."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    for i in range(1, n + 1):
        cy, cx = rng.uniform(10, shape[0] - 10), rng.uniform(10, shape[1] - 10)
        ry, rx = rng.uniform(4, 12, size=2)
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        labels[inside & (labels == 0)] = i
    return labels


def cells(shape=(120, 150), n=150, seed=0) -> np.ndarray:
    """Dense labels: a Voronoi partition into ``n`` small cells, a few left as background."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 1, (n, 2)) * shape
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    d = (yy[..., None] - centres[:, 0]) ** 2 + (xx[..., None] - centres[:, 1]) ** 2
    labels = d.argmin(axis=-1).astype(np.int32)  # cell 0 is background
    return labels


@pytest.mark.parametrize("seed", range(8))
def test_image_and_labels_stay_aligned(seed):
    """The image *is* the labels (as float): after the warp it must still read as them."""
    labels = cells(seed=seed)
    image = labels[None].astype(np.float32)
    rng = np.random.default_rng(seed)
    out, lab = random_crop(image, labels, rng, GEOMETRY_ONLY, size=96)
    assert out.shape == (1, 96, 96) and lab.shape == (96, 96) and lab.dtype == labels.dtype
    # where bilinear interpolation saw one label only, nearest neighbour must give that label;
    # a shift of one pixel between the two would break this along every edge
    pure = np.abs(out[0] - np.round(out[0])) < 1e-3
    assert pure.mean() > 0.5
    agree = np.round(out[0]).astype(int)[pure] == lab[pure]
    assert agree.mean() > 0.995, agree.mean()
    # the foreground (threshold of the image) is the labels' foreground, up to edge pixels
    fg_img, fg_lab = out[0] > 0.5, lab > 0
    if fg_lab.any():
        iou = (fg_img & fg_lab).sum() / (fg_img | fg_lab).sum()
        assert iou > 0.85, iou


def test_warp_transforms_something():
    labels = blobs()
    image = labels[None].astype(np.float32)
    crops = {
        random_crop(image, labels, np.random.default_rng(s), GEOMETRY_ONLY, 64)[1].tobytes()
        for s in range(5)
    }
    assert len(crops) == 5


def test_exact_flip_and_turn():
    """With only flips and turns (zoom 1), warp is an exact permutation of pixels."""
    config = AugmentConfig.none()
    config = replace(config, flip=True, rot90=True)
    labels = blobs((64, 64))
    image = np.stack([labels, labels * 2]).astype(np.float32)
    for s in range(6):
        matrix = random_matrix(np.random.default_rng(s), config)
        out, lab = warp(image, labels, matrix, (31.5, 31.5), 64)
        assert np.array_equal(out[0], lab) and np.array_equal(out[1], 2 * lab)
        assert sorted(np.unique(lab)) == sorted(np.unique(labels))


def test_intensity_jitter_never_moves_labels():
    labels = blobs()
    image = (labels[None] > 0).astype(np.float32)
    plain = random_crop(image, labels, np.random.default_rng(3), GEOMETRY_ONLY, 80)
    jittered = random_crop(image, labels, np.random.default_rng(3), AugmentConfig(), 80)
    assert np.array_equal(plain[1], jittered[1])
    assert not np.allclose(plain[0], jittered[0])


def test_same_seed_same_crop_and_small_images_fill_the_crop():
    labels = blobs((40, 50), n=3)
    image = labels[None].astype(np.float32)
    a = random_crop(image, labels, np.random.default_rng(9), AugmentConfig(), 128)
    b = random_crop(image, labels, np.random.default_rng(9), AugmentConfig(), 128)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert a[0].shape == (1, 128, 128)
    assert (a[1] > 0).mean() > (labels > 0).mean() / 4  # mirrored, not padded with zeros


def test_stain_jitter_only_tints_colour_images():
    rng = np.random.default_rng(0)
    grey = np.dstack([np.arange(12).reshape(3, 4)] * 3).astype(np.uint8)
    assert np.array_equal(jitter_stain(grey, rng, AugmentConfig()), grey.astype(np.float32))
    colour = rng.integers(0, 255, (3, 4, 3)).astype(np.uint8)
    assert not np.allclose(jitter_stain(colour, rng, AugmentConfig()), colour)
    assert np.array_equal(jitter_stain(colour, rng, AugmentConfig.none()), colour)


def test_dataset_targets_follow_the_image():
    """Through the whole dataset path (normalise, warp, targets): body = bright pixels."""
    labels = blobs((150, 170), n=15).astype(np.uint16)
    image = np.where(labels > 0, 200, 10).astype(np.uint8)
    sample = Sample("synthetic", Path("."), image, labels)
    data = CropDataset([sample], augment=GEOMETRY_ONLY, crop_size=64, repeats=4, seed=1)
    assert len(data) == 4
    for i in range(len(data)):
        x, y = data[i]
        assert x.shape == (1, 64, 64) and y.shape == (2, 64, 64)
        body = y[0].numpy() > 0
        bright = x[0].numpy() > 0.5
        if body.any():
            assert (body & bright).sum() / (body | bright).sum() > 0.85
    x0, y0 = data[0]
    data.set_epoch(1)
    x1, _ = data[0]
    assert not np.array_equal(x0.numpy(), x1.numpy())  # a new epoch draws new crops


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="must match"):
        warp(np.zeros((1, 5, 5), np.float32), np.zeros((5, 6), int), np.eye(2), (2, 2), 4)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        random_crop(
            np.zeros((5, 5)), np.zeros((5, 5), int), np.random.default_rng(), AugmentConfig()
        )


def test_inverted_repeats_oversample_bright_background_samples():
    """The histology (bright-background) sample gets 3x the crops; fluorescence keeps one."""
    samples = [read_sample(sample_folder(kind)) for kind in ("fluorescence", "histology")]
    plain = CropDataset(samples, crop_size=64, repeats=2)
    more = CropDataset(samples, crop_size=64, repeats=2, inverted_repeats=3)
    assert len(plain) == 4 and [plain.source(i) for i in range(4)] == [0, 1, 0, 1]
    assert len(more) == 8 and [more.source(i) for i in range(4)] == [0, 1, 1, 1]
    # the extra crops are different crops of the histology sample, not copies
    crops = [more[i][0].numpy() for i in (1, 2, 3)]
    assert not np.array_equal(crops[0], crops[1]) and not np.array_equal(crops[1], crops[2])
    with pytest.raises(ValueError, match="inverted_repeats"):
        CropDataset(samples, inverted_repeats=0)
