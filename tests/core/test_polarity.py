"""The inversion rule (preprocess.polarity) and the channel choice: synthetic images of every
kind, the real samples in the repository, and every stage-1 and MoNuSeg image when
../shared is present."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_nucleiseg.io import read_sample, stage1
from napari_nucleiseg.io.images import image_files, read_image_file
from napari_nucleiseg.models import ModelConfig
from napari_nucleiseg.preprocess import (
    NormalizeConfig,
    contrast,
    network_input,
    normalize,
    polarity,
    should_invert,
)
from napari_nucleiseg.samples import sample_folder

SHAPE = (256, 256)
#: the median rule of before: invert when the scaled median is above 0.3
OLD_THRESHOLD = 0.3


def nuclei(cover: float, radius: int = 9, seed: int = 0) -> np.ndarray:
    """A boolean mask of random disks covering about ``cover`` of the frame."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(SHAPE, bool)
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    while mask.mean() < cover:
        y, x = rng.integers(0, SHAPE[0]), rng.integers(0, SHAPE[1])
        mask |= (yy - y) ** 2 + (xx - x) ** 2 < radius**2
    return mask


def texture(seed: int, sigma: float = 2.0) -> np.ndarray:
    """Smooth noise of standard deviation about 1."""
    field = ndi.gaussian_filter(np.random.default_rng(seed).normal(size=SHAPE), sigma)
    return field / field.std()


def noise(seed: int, scale: float, shape=SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, scale, shape)


def as_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def dense_dim_fluorescence() -> np.ndarray:
    """Dim nuclei over ~70% of the frame, a few bright spots: as the stage-1 test image the
    median rule inverted (1st/50th/99.8th percentiles 0/20/63)."""
    body = nuclei(0.7, radius=11, seed=1)
    image = 1 + noise(2, 0.7) + body * (20 + 4 * texture(3))
    spots = nuclei(0.004, radius=2, seed=4) & body
    image[spots] = 60
    return as_uint8(image)


def sparse_fluorescence() -> np.ndarray:
    return as_uint8(10 + noise(5, 2) + nuclei(0.08, seed=6) * (150 + 15 * texture(7)))


def grey_brightfield() -> np.ndarray:
    """Dark nuclei (25% of the frame) on a bright background."""
    return as_uint8(200 + noise(8, 4) - nuclei(0.25, seed=9) * (120 + 10 * texture(10)))


def hematoxylin_eosin(nuclei_cover: float, white: float) -> np.ndarray:
    """Purple nuclei in pink stroma, with ``white`` of the frame unstained (white)."""
    stroma, nucleus = np.array([228, 150, 200]), np.array([110, 60, 160])
    blank = nuclei(white, radius=30, seed=11) if white else np.zeros(SHAPE, bool)
    body = nuclei(nuclei_cover, seed=12) & ~blank
    rgb = np.where(body[..., None], nucleus, stroma).astype(float)
    rgb[blank] = (238, 235, 240)
    rgb += 8 * texture(13)[..., None] + noise(14, 3, (*SHAPE, 3))
    return as_uint8(rgb)


def composite(cytoplasm_cover: float) -> np.ndarray:
    """Fluorescence composite: red nuclei, green cytoplasm around them, black elsewhere."""
    cells = nuclei(cytoplasm_cover, radius=24, seed=15)
    body = nuclei(0.15, seed=16) & cells
    red = body * (180 + 20 * texture(17))
    green = cells * (70 + 10 * texture(18))
    rgb = np.stack([red, green, np.zeros(SHAPE)], axis=-1) + 2 + noise(19, 1, (*SHAPE, 3))
    return as_uint8(rgb)


def noisy_rgb(grey: np.ndarray) -> np.ndarray:
    """A grey image from a colour camera: each channel with its own noise."""
    return as_uint8(grey[..., None].astype(float) + noise(20, 3, (*grey.shape, 3)))


# ---- the rule on synthetic images of each kind ------------------------------------------
def test_dense_dim_fluorescence_is_not_inverted():
    image = dense_dim_fluorescence()
    low, mid, high = np.percentile(image, [1, 50, 99.8])
    assert low <= 2 and 15 <= mid <= 25 and high >= 55  # the test image's 0/20/63
    found = polarity(image)
    assert found.median > OLD_THRESHOLD  # the median rule of before inverted it
    assert not found.colour and not found.inverts
    assert not should_invert(image)
    assert not should_invert(image.astype(np.uint16) * 257)  # any dtype and range
    assert not should_invert(image.astype(np.float32) / 255)


def test_sparse_fluorescence_is_not_inverted():
    image = sparse_fluorescence()
    assert polarity(image).median < 0.1
    assert not should_invert(image)
    assert not should_invert(np.repeat(image[..., None], 3, axis=-1))  # grey stored as RGB


def test_grey_brightfield_is_inverted():
    image = grey_brightfield()
    assert should_invert(image)
    rgb = polarity(np.repeat(image[..., None], 3, axis=-1))
    assert not rgb.colour and rgb.inverts


@pytest.mark.parametrize(("nuclei_cover", "white"), [(0.25, 0.2), (0.6, 0.0)])
def test_hematoxylin_eosin_is_inverted(nuclei_cover, white):
    image = hematoxylin_eosin(nuclei_cover, white)
    found = polarity(image)
    assert found.colour and found.inverts
    if not white:  # dense tissue, no white: the median is low, colour still tells
        assert found.median < OLD_THRESHOLD
    assert should_invert(image)


@pytest.mark.parametrize("cytoplasm_cover", [0.4, 0.95])
def test_fluorescence_composite_is_never_inverted(cytoplasm_cover):
    image = composite(cytoplasm_cover)
    found = polarity(image)
    assert found.colour and found.whiteness < 0.1  # its brightest pixels are red or yellow
    assert not found.inverts and not should_invert(image)
    rgba = np.concatenate([image, np.full((*SHAPE, 1), 255, np.uint8)], axis=-1)
    assert not should_invert(rgba)


@pytest.mark.parametrize("make", [sparse_fluorescence, dense_dim_fluorescence])
def test_colour_noise_does_not_make_a_grey_image_colour(make):
    found = polarity(noisy_rgb(make()))
    assert not found.colour and not found.inverts


def test_the_config_overrides_the_rule():
    image = grey_brightfield()
    assert not should_invert(image, NormalizeConfig(invert="never"))
    assert should_invert(sparse_fluorescence(), NormalizeConfig(invert="always"))
    out = normalize(image, NormalizeConfig(invert="never"))
    np.testing.assert_allclose(1 - out, normalize(image), atol=1e-6)


# ---- the channel choice -----------------------------------------------------------------
def test_a_chosen_channel_is_normalised_alone():
    image = composite(0.4)
    red = NormalizeConfig(channel=0)
    np.testing.assert_array_equal(normalize(image, red), normalize(image[..., 0]))
    assert polarity(image, red) == polarity(image[..., 0])
    assert contrast(image, red) == contrast(image[..., 0])
    net = network_input(image, ModelConfig(normalization=red))
    np.testing.assert_array_equal(net, normalize(image[..., 0]))
    rgb_model = NormalizeConfig(channels="rgb", channel=1)  # the channel, repeated
    out = normalize(image, rgb_model)
    assert out.shape == (3, *SHAPE)
    np.testing.assert_array_equal(out[2], normalize(image[..., 1])[0])
    five = np.stack([image[..., 0]] * 4 + [image[..., 1]], axis=-1)  # any channel count
    np.testing.assert_array_equal(
        normalize(five, NormalizeConfig(channel=4)), normalize(image[..., 1])
    )
    grey = sparse_fluorescence()
    np.testing.assert_array_equal(normalize(grey, NormalizeConfig(channel=0)), normalize(grey))


@pytest.mark.parametrize(
    ("shape", "channel", "message"),
    [
        ((16, 16, 3), 3, "the image has 3 channels (0-2): there is no channel 3"),
        ((16, 16, 4), 7, "the image has 4 channels (0-3): there is no channel 7"),
        ((16, 16), 1, "the image has 1 channel (0): there is no channel 1"),
    ],
)
def test_a_channel_the_image_lacks_is_one_clear_error(shape, channel, message):
    image = np.zeros(shape, np.uint8)
    for function in (normalize, should_invert, polarity, network_input, contrast):
        with pytest.raises(ValueError) as caught:
            function(image, NormalizeConfig(channel=channel))
        assert str(caught.value) == message


@pytest.mark.parametrize("bad", [-1, 1.5, "red", True])
def test_a_bad_channel_is_refused_by_the_config(bad):
    with pytest.raises(ValueError, match="channel must be None or an index"):
        NormalizeConfig(channel=bad)


def test_checkpoints_written_before_the_channel_still_load():
    before = {"channels": "grey", "low": 1.0, "high": 99.8, "invert": "auto"}
    old = ModelConfig.from_dict({"normalization": {**before, "invert_threshold": 0.3}})
    assert old.normalization.channel is None
    assert should_invert(grey_brightfield(), old) and not should_invert(
        dense_dim_fluorescence(), old
    )  # the threshold they store is the rule of before: not used
    chosen = ModelConfig(normalization=NormalizeConfig(channel=2, invert="never"))
    assert ModelConfig.from_dict(chosen.to_dict()) == chosen


# ---- real images ------------------------------------------------------------------------
def test_the_real_samples_in_the_repository():
    """Grey fluorescence (shipped and tests/data) and stage-1 colour H&E (shipped)."""
    fluorescence = [sample_folder("fluorescence"), *stage1.list_samples(_tests_data())]
    for folder in fluorescence:
        found = polarity(stage1.read_image(folder))
        assert not found.colour and not found.inverts, folder.name
    found = polarity(stage1.read_image(sample_folder("histology")))
    assert found.colour and found.inverts
    sample = read_sample(sample_folder("histology"))
    out = normalize(sample.image)[0]  # inverted: the nuclei come out bright
    assert np.median(out[sample.labels > 0]) > np.median(out[sample.labels == 0])


def _tests_data():
    from pathlib import Path

    return Path(__file__).parents[1] / "data" / "stage1_fixed"


def _stage1_kind(folder, image) -> str:
    if image.ndim == 3 and bool(np.any(image[..., :3].std(axis=-1) > 0)):
        return "colour"
    grey = image[..., 0] if image.ndim == 3 else image
    if grey.mean() > 100:  # only a bright image can be brightfield: its nuclei are darker
        labels = read_sample(folder).labels
        if np.median(grey[labels > 0]) < np.median(grey[labels == 0]):
            return "brightfield"
    return "fluorescence"


@pytest.mark.shared
def test_every_stage1_image_is_decided_as_before_and_right(shared_data):
    """All 670 images of stage1_train: the rule decides as the median rule of before (all of
    them right), by kind: grey fluorescence not inverted, grey brightfield and colour
    (H&E-like) inverted."""
    counts: dict[str, int] = {}
    wrong, changed = [], []
    for folder in stage1.list_samples(shared_data / "stage1_train"):
        image = stage1.read_image(folder)
        kind = _stage1_kind(folder, image)
        counts[kind] = counts.get(kind, 0) + 1
        found = polarity(image)
        if found.inverts != (kind != "fluorescence"):
            wrong.append((kind, folder.name))
        if found.inverts != (found.median > OLD_THRESHOLD):
            changed.append(folder.name)
    assert counts == {"fluorescence": 546, "brightfield": 16, "colour": 108}
    assert wrong == [] and changed == []


@pytest.mark.shared
def test_every_monuseg_tile_is_inverted(shared_data):
    tiles = shared_data.parent / "monuseg2018" / "images"
    if not tiles.is_dir():
        pytest.skip(f"the MoNuSeg 2018 tiles are not at {tiles}")
    found = {path.stem: polarity(read_image_file(path)) for path in image_files(tiles)}
    assert len(found) == 30
    assert all(p.colour for p in found.values())
    assert [name for name, p in found.items() if not p.inverts] == []
    assert sum(p.median <= OLD_THRESHOLD for p in found.values()) == 3  # missed before


def test_a_runs_choices_replace_only_polarity_and_channel():
    """A run's polarity and channel go over each model's normalisation; its percentiles and
    input channels stay the model's; nothing else can be chosen for a run."""
    own = NormalizeConfig(channels="rgb", low=2.0, high=99.0)
    assert own.chosen(None) is own and own.chosen({}) is own
    chosen = own.chosen({"invert": "always", "channel": 1})
    assert (chosen.invert, chosen.channel) == ("always", 1)
    assert (chosen.channels, chosen.low, chosen.high) == ("rgb", 2.0, 99.0)
    with pytest.raises(ValueError, match="only invert, channel"):
        own.chosen({"low": 5.0})
    with pytest.raises(ValueError, match="invert must be one of"):
        own.chosen({"invert": "sometimes"})
