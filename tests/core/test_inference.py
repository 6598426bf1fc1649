"""Inference: devices, tiles equal to one pass (exactly, or nearly when blended), batches, flips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_nucleiseg.devices import resolve_device
from napari_nucleiseg.inference import drain, predict_maps, tile_side, tile_starts
from napari_nucleiseg.io import read_sample
from napari_nucleiseg.models import ModelConfig
from napari_nucleiseg.samples import sample_folder


@pytest.fixture(scope="module")
def model_and_config():
    torch.manual_seed(0)
    config = ModelConfig("unet", {"depth": 3, "base": 8})
    return config.build().eval(), config


@pytest.fixture(scope="module")
def image():
    return read_sample(sample_folder("histology")).image  # 256x320 RGB


def run(gen):
    steps = []
    maps = drain(gen, steps.append)
    return maps, steps


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else None
    if expected is None:
        mps = getattr(torch.backends, "mps", None)
        expected = "mps" if mps is not None and mps.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(ValueError, match="auto, cpu, cuda, mps"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="not available"):
            resolve_device("cuda")


def test_whole_image_maps(model_and_config, image):
    model, config = model_and_config
    maps, steps = run(predict_maps(model, config, image, device="cpu"))
    assert maps.shape == (2, 256, 320) and maps.dtype == np.float32
    assert 0 <= maps.min() and maps.max() <= 1
    assert steps == [(1, 1)]


def test_tiled_equals_untiled(model_and_config, image):
    model, config = model_and_config
    whole, _ = run(predict_maps(model, config, image))
    tiled, steps = run(predict_maps(model, config, image, tile_size=128, overlap=64, batch_size=2))
    assert steps[-1] == (12, 12) and len(steps) == 6  # a 3x4 grid, 2 tiles per batch
    assert np.abs(tiled - whole).max() < 1e-3


def test_batching_does_not_change_the_result(model_and_config, image):
    model, config = model_and_config
    one, steps_one = run(predict_maps(model, config, image, tile_size=96, overlap=32, batch_size=1))
    many, steps_many = run(
        predict_maps(model, config, image, tile_size=96, overlap=32, batch_size=5)
    )
    assert len(steps_one) > len(steps_many)
    np.testing.assert_allclose(one, many, atol=1e-5)


def test_odd_sizes_and_dtypes(model_and_config):
    model, config = model_and_config
    rng = np.random.default_rng(0)
    for img in (
        rng.integers(0, 65535, (37, 91), dtype=np.uint16),
        rng.random((50, 61, 4)),
        rng.integers(0, 255, (3, 5), dtype=np.uint8),
    ):
        maps = drain(predict_maps(model, config, img, tile_size=32, overlap=8))
        assert maps.shape == (2, *img.shape[:2])
        assert np.isfinite(maps).all()


def test_flips_average_and_model_mode_is_restored(model_and_config, image):
    model, config = model_and_config
    model.train()
    maps, steps = run(predict_maps(model, config, image, tta=True))
    assert model.training
    model.eval()
    assert steps[-1] == (4, 4)
    plain = drain(predict_maps(model, config, image))
    assert maps.shape == plain.shape and not np.array_equal(maps, plain)
    # a flipped image gives the flipped maps when flips are averaged
    flipped = drain(predict_maps(model, config, image[:, ::-1].copy(), tta=True))
    np.testing.assert_allclose(flipped[:, :, ::-1], maps, atol=1e-4)


def test_tile_starts_cover_with_overlap():
    for length, tile, overlap in [(512, 128, 32), (320, 128, 64), (1024, 1024, 64), (96, 64, 0)]:
        starts = tile_starts(length, tile, overlap, 16)
        assert starts[0] == 0 and starts[-1] + tile == length
        assert all(s % 16 == 0 for s in starts)
        assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:], strict=False))


def test_tile_side():
    assert tile_side(520, 696) == 696  # one tile up to WHOLE_IMAGE_PIXELS
    assert tile_side(2048, 2048) == 1024  # DEFAULT_TILE beyond
    assert tile_side(520, 696, 256) == 256


def test_bad_arguments(model_and_config, image):
    model, config = model_and_config
    with pytest.raises(ValueError, match="divisor"):
        drain(predict_maps(model, config, image, tile_size=4))
    with pytest.raises(ValueError, match="channels"):
        drain(predict_maps(model, ModelConfig(maps=("body", "border", "contour")), image))


def test_receptive_radius_of_the_architectures(model_and_config):
    """The probe's reach: a depth-3 U-Net sees fewer pixels than the shipped depth-4 one."""
    from napari_nucleiseg.inference import receptive_radius
    from napari_nucleiseg.models import load_model

    model, _ = model_and_config
    small = receptive_radius(model)
    unet, _ = load_model("dsb2018-unet")
    assert 20 < small < receptive_radius(unet) == 94


@pytest.mark.parametrize("tile", [208, 320, 512])
def test_tiles_give_the_maps_of_the_whole_image_exactly(tile):
    """With the default overlap, a U-Net's tiles (of at least 2 x 96 + 16 px) each give their
    core, computed with all the context the network sees: the maps of one pass over the
    whole image, value for value, so the labels cannot depend on the tile size."""
    from napari_nucleiseg.models import load_model
    from napari_nucleiseg.pipeline import labels_from_predicted

    model, config = load_model("dsb2018-unet")
    image = read_sample(sample_folder("fluorescence")).image[..., :3].mean(axis=-1)
    image = np.tile(image, (2, 3))[:700, :900].astype(np.float32)  # 700x900, two edges odd
    whole = drain(predict_maps(model, config, image, tile_size=1024))
    tiled = drain(predict_maps(model, config, image, tile_size=tile))
    np.testing.assert_array_equal(tiled, whole)
    np.testing.assert_array_equal(
        labels_from_predicted(tiled, config), labels_from_predicted(whole, config)
    )


@pytest.mark.parametrize("architecture", ["dsb2018-unet", "dsb2018-linknet"])
def test_rows_of_the_maps_apart_equal_the_whole_run(architecture):
    """Processes sharing one image each compute some rows (``rows``): together the maps of
    one run, value for value, whether the tiles' cores are exact (U-Net) or blended
    (LinkNet), for blocks that cut through tiles and for an empty block."""
    from napari_nucleiseg.inference import predict_into
    from napari_nucleiseg.models import load_model
    from napari_nucleiseg.preprocess import scaling

    model, config = load_model(architecture)
    image = read_sample(sample_folder("fluorescence")).image[..., :3].mean(axis=-1)
    image = np.tile(image, (3, 2))[:700, :500].astype(np.float32)
    found = scaling(image, config)
    whole = np.full((model.out_channels, *image.shape), np.nan, np.float32)
    drain(predict_into(model, found, image, whole, tile_size=256))
    apart = np.full_like(whole, np.nan)
    for first, last in [(0, 100), (100, 100), (100, 333), (333, 700)]:
        drain(predict_into(model, found, image, apart, tile_size=256, rows=(first, last)))
    assert not np.isnan(whole).any()
    np.testing.assert_array_equal(apart, whole)
