"""Normalisation: shapes, dtypes, percentiles, and the inversion rule on the real data set."""

from __future__ import annotations

import numpy as np
import pytest

from napari_nucleiseg.io import read_sample, read_stage1_image
from napari_nucleiseg.models import ModelConfig
from napari_nucleiseg.preprocess import NormalizeConfig, normalize, should_invert
from napari_nucleiseg.samples import sample_folder


def dark_field(dtype=np.uint8, scale=200) -> np.ndarray:
    """Two bright disks on a dark background."""
    yy, xx = np.mgrid[:64, :80]
    image = np.full((64, 80), 5.0)
    image[(yy - 20) ** 2 + (xx - 20) ** 2 < 64] = scale
    image[(yy - 40) ** 2 + (xx - 50) ** 2 < 100] = scale
    return image.astype(dtype)


@pytest.mark.parametrize("dtype, scale", [(np.uint8, 200), (np.uint16, 40000), (np.float64, 0.7)])
def test_grey_image_any_dtype(dtype, scale):
    out = normalize(dark_field(dtype, scale))
    assert out.shape == (1, 64, 80) and out.dtype == np.float32
    assert out.min() == pytest.approx(0, abs=1e-6) and out.max() == pytest.approx(1, abs=1e-6)
    assert out[0, 20, 20] > out[0, 0, 0]  # nuclei stay bright


def test_colour_and_alpha_become_grey_or_rgb():
    grey = dark_field()
    rgba = np.dstack([grey, grey, grey, np.full_like(grey, 255)])
    assert np.allclose(normalize(rgba), normalize(grey))
    rgb = normalize(rgba, NormalizeConfig(channels="rgb"))
    assert rgb.shape == (3, 64, 80)
    assert normalize(grey, NormalizeConfig(channels="rgb")).shape == (3, 64, 80)
    # a ModelConfig works too: its normalisation is used
    assert normalize(grey, ModelConfig(normalization=NormalizeConfig(channels="rgb"))).shape[0] == 3


def test_bright_background_is_inverted():
    image = 255 - dark_field()
    assert should_invert(image)
    out = normalize(image)
    assert out[0, 20, 20] > out[0, 0, 0]
    assert np.allclose(out, normalize(dark_field()), atol=1e-6)
    assert not should_invert(image, NormalizeConfig(invert="never"))
    assert should_invert(dark_field(), NormalizeConfig(invert="always"))


def test_shipped_samples_nuclei_bright():
    for kind in ("fluorescence", "histology"):
        sample = read_sample(sample_folder(kind))
        out = normalize(sample.image)[0]
        fg = sample.labels > 0
        assert np.median(out[fg]) > np.median(out[~fg]), kind


def test_constant_image_does_not_divide_by_zero():
    out = normalize(np.full((10, 12), 7, np.uint8))
    assert np.isfinite(out).all()


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((4, 4, 2)), "expected"),
        (np.zeros((2, 4, 4, 3)), "expected"),
        (np.zeros((0, 4)), "no pixels"),
        (np.array([[1.0, np.nan]]), "NaN"),
        (np.array([["a", "b"]]), "dtype"),
    ],
)
def test_bad_input_is_rejected(bad, match):
    with pytest.raises(ValueError, match=match):
        normalize(bad)


@pytest.mark.shared
def test_inversion_rule_on_stage1_train(shared_data):
    """Every colour (H&E-like) and grey brightfield image inverts; no fluorescence image does.

    Grey brightfield images are told apart by their ground truth: nuclei darker
    than the background (median inside the masks below median outside).
    """
    wrong: dict[str, list[str]] = {"colour": [], "brightfield": [], "fluorescence": []}
    counts = dict.fromkeys(wrong, 0)
    for folder in sorted(p for p in (shared_data / "stage1_train").iterdir() if p.is_dir()):
        image = read_stage1_image(folder / "images" / f"{folder.name}.png")
        colour = image.ndim == 3 and bool(
            np.any(image[..., 0] != image[..., 1]) or np.any(image[..., 1] != image[..., 2])
        )
        if colour:
            kind = "colour"
        else:
            grey = image[..., 0] if image.ndim == 3 else image
            labels = read_sample(folder).labels if grey.mean() > 100 else None
            dark_nuclei = labels is not None and np.median(grey[labels > 0]) < np.median(
                grey[labels == 0]
            )
            kind = "brightfield" if dark_nuclei else "fluorescence"
        counts[kind] += 1
        if should_invert(image) != (kind != "fluorescence"):
            wrong[kind].append(folder.name)
    assert counts["colour"] == 108
    assert counts["brightfield"] + counts["fluorescence"] == 562
    assert counts["brightfield"] >= 16
    assert wrong == {k: [] for k in wrong}, f"misjudged: {wrong} of {counts}"
