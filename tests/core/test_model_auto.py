"""``--model auto`` picks the shipped model of each image's kind; ``--diameter`` (subprocesses)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_nucleiseg.io import read_sample
from napari_nucleiseg.kinds import HE_MODEL, is_he_like
from napari_nucleiseg.models import DEFAULT_MODEL, shipped_models
from napari_nucleiseg.models.choice import AUTO, ModelChoice
from napari_nucleiseg.samples import sample_folder


def nucleiseg(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "napari_nucleiseg.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
    )


def composite(grey: np.ndarray) -> np.ndarray:
    """A fluorescence composite: the nuclei in red, a dilated copy (cytoplasm) in green."""
    from scipy import ndimage as ndi

    rgb = np.zeros((*grey.shape, 3), np.uint8)
    rgb[..., 0] = grey
    rgb[..., 1] = ndi.grey_dilation(grey, size=9) // 2
    return rgb


def test_the_he_model_is_shipped_and_auto_picks_by_kind():
    assert HE_MODEL in shipped_models()
    choice = ModelChoice(AUTO)
    fluorescence = read_sample(sample_folder("fluorescence")).image
    histology = read_sample(sample_folder("histology")).image
    assert choice.for_image(fluorescence)[0] == DEFAULT_MODEL
    assert choice.for_image(histology)[0] == HE_MODEL
    grey = fluorescence[..., 0] if fluorescence.ndim == 3 else fluorescence
    assert not is_he_like(composite(grey))
    assert choice.for_image(composite(grey))[0] == DEFAULT_MODEL
    assert ModelChoice(DEFAULT_MODEL).for_image(histology)[0] == DEFAULT_MODEL


def _labels(out: Path, folder: Path) -> np.ndarray:
    return tifffile.imread(out / f"{folder.name}.tif")


def test_predict_auto_gives_each_image_its_kinds_model(tmp_path):
    folders = [sample_folder("fluorescence"), sample_folder("histology")]
    runs = {}
    for model in (AUTO, DEFAULT_MODEL, HE_MODEL):
        out = tmp_path / model
        result = nucleiseg("predict", *folders, "-o", out, "--model", model)
        assert result.returncode == 0, result.stderr
        runs[model] = {f.name: _labels(out, f) for f in folders}
    fluo, histo = (f.name for f in folders)
    assert np.array_equal(runs[AUTO][fluo], runs[DEFAULT_MODEL][fluo])
    assert np.array_equal(runs[AUTO][histo], runs[HE_MODEL][histo])
    assert not np.array_equal(runs[DEFAULT_MODEL][histo], runs[HE_MODEL][histo])


def test_predict_diameter(tmp_path):
    folder = sample_folder("fluorescence")
    labels = {}
    for diameter in ("none", "auto", "150"):
        out = tmp_path / diameter
        result = nucleiseg("predict", folder, "-o", out, "--model", DEFAULT_MODEL,
                           "--diameter", diameter)  # fmt: skip
        assert result.returncode == 0, result.stderr
        labels[diameter] = _labels(out, folder)
    # its nuclei are within the shipped model's range: auto leaves the image as it is
    assert np.array_equal(labels["auto"], labels["none"])
    # told they are 150 px, the image is shrunk (to 53-px nuclei): fewer, merged nuclei
    assert 0 < labels["150"].max() < labels["none"].max()


def test_predict_diameter_in_microns_uses_each_files_pixel_size(tmp_path):
    """75 µm at 0.5 µm a pixel is 150 px: the pixel size recorded in an ImageJ TIFF, or given
    with --pixel-size; a file without one is refused by name before anything is written."""
    png = sample_folder("fluorescence")
    image = read_sample(png).image
    grey = image[..., 0] if image.ndim == 3 else image
    tiff = tmp_path / "in" / "cells.tif"
    tiff.parent.mkdir()
    tifffile.imwrite(tiff, grey, imagej=True, resolution=(2.0, 2.0), metadata={"unit": "um"})
    runs = {}
    for name, args in {
        "px": (tiff, "--diameter", "150"),
        "recorded": (tiff, "--diameter", "75um"),
        "given": (png, "--diameter", "75µm", "--pixel-size", "0.5"),
    }.items():
        result = nucleiseg("predict", *args, "-o", tmp_path / name, "--model", DEFAULT_MODEL)
        assert result.returncode == 0, result.stderr
        runs[name] = tifffile.imread(next((tmp_path / name).glob("*.tif")))
    assert 0 < runs["px"].max()
    assert np.array_equal(runs["recorded"], runs["px"])
    assert np.array_equal(runs["given"], runs["px"])
    result = nucleiseg("predict", png, tiff, "-o", tmp_path / "none", "--diameter", "75um")
    assert result.returncode == 1
    assert f"{png.name}.png: has no pixel size" in result.stderr
    assert "75 µm" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "none").exists()
    # on a cluster too, refused before the cluster starts (no "segmenting ... on the Dask ...")
    result = nucleiseg("predict", png, "-o", tmp_path / "none", "--diameter", "75um",
                       "--workers", "2")  # fmt: skip
    assert result.returncode == 1 and f"{png.name}.png: has no pixel size" in result.stderr
    assert "Dask" not in result.stderr and "segmenting" not in result.stderr
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize("bad", ["0", "-5", "big", "nan", "inf", "0um", "5 nm"])
def test_a_bad_diameter_is_one_line(tmp_path, bad):
    result = nucleiseg("predict", sample_folder("fluorescence"), "-o", tmp_path / "o",
                       "--diameter", bad)  # fmt: skip
    assert result.returncode == 2
    assert "--diameter" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()
