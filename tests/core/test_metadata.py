"""io/metadata.py: the pixel size a file records, written here by tifffile as each tool
writes it (OME-TIFF, ImageJ, a centimetre resolution), and the files that record none."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_nucleiseg.errors import FileProblem, NucleisegError
from napari_nucleiseg.io.metadata import pixel_size_for, pixel_size_of, tiff_pixel_size

PIXELS = np.arange(12 * 15, dtype=np.uint16).reshape(12, 15)


def ome(path, y, x, unit):
    metadata = {"axes": "YX", "PhysicalSizeY": y, "PhysicalSizeX": x}
    if unit is not None:
        metadata.update(PhysicalSizeYUnit=unit, PhysicalSizeXUnit=unit)
    tifffile.imwrite(path, PIXELS, ome=True, metadata=metadata)
    return path


@pytest.mark.parametrize(
    "y,x,unit,expected",
    [
        (0.5, 0.25, "µm", (0.5, 0.25)),  # the micro sign
        (0.5, 0.25, "μm", (0.5, 0.25)),  # the Greek mu
        (500, 250, "nm", (0.5, 0.25)),
        (0.3, 0.3, None, (0.3, 0.3)),  # OME's default unit is the micrometre
        (0.001, 0.001, "mm", (1.0, 1.0)),
    ],
    ids=["um", "greek-mu", "nm", "default-unit", "mm"],
)
def test_ome_tiff(tmp_path, y, x, unit, expected):
    path = ome(tmp_path / "a.ome.tif", y, x, unit)
    assert pixel_size_of(path) == pytest.approx(expected, rel=1e-12)
    assert tiff_pixel_size(path) == pytest.approx(expected, rel=1e-12)


def test_ome_tiff_in_an_unknown_unit_is_no_pixel_size(tmp_path):
    assert pixel_size_of(ome(tmp_path / "a.ome.tif", 1, 1, "pixel")) is None


@pytest.mark.parametrize(
    "unit,factor",
    [("micron", 1.0), ("um", 1.0), ("\\u00B5m", 1.0), ("nm", 1e-3), ("mm", 1e3)],
    ids=["micron", "um", "escaped-micro-sign", "nm", "mm"],
)
def test_imagej_tiff(tmp_path, unit, factor):
    path = tmp_path / "ij.tif"
    # ImageJ: pixels per unit in the resolution tags, the unit in the description
    tifffile.imwrite(
        path, PIXELS, imagej=True, resolution=(1 / 0.25, 1 / 0.5), metadata={"unit": unit}
    )
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej and tif.imagej_metadata["unit"] == unit
    assert pixel_size_of(path) == pytest.approx((0.5 * factor, 0.25 * factor), rel=1e-9)


def test_imagej_tiff_without_a_length_unit(tmp_path):
    for unit in ["pixel", "inch"]:
        path = tmp_path / f"{unit}.tif"
        tifffile.imwrite(path, PIXELS, imagej=True, resolution=(4, 4), metadata={"unit": unit})
        assert pixel_size_of(path) is None, unit


def test_centimetre_tiff(tmp_path):
    path = tmp_path / "cm.tif"
    tifffile.imwrite(path, PIXELS, resolution=(1e4 / 0.25, 1e4 / 0.5), resolutionunit="CENTIMETER")
    assert pixel_size_of(path) == pytest.approx((0.5, 0.25), rel=1e-6)
    path = tmp_path / "cm.TIFF"  # the suffix in any case
    tifffile.imwrite(path, PIXELS, resolution=(1e4 / 0.65, 1e4 / 0.65), resolutionunit="CENTIMETER")
    assert pixel_size_of(path) == pytest.approx((0.65, 0.65), rel=1e-6)


def test_inch_tiff_is_no_pixel_size(tmp_path):
    path = tmp_path / "inch.tif"
    tifffile.imwrite(path, PIXELS, resolution=(300, 300), resolutionunit="INCH")
    with tifffile.TiffFile(path) as tif:
        assert tif.pages.first.tags["XResolution"].value == (300, 1)
    assert pixel_size_of(path) is None


def test_plain_tiff_is_no_pixel_size(tmp_path):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, PIXELS)
    assert pixel_size_of(path) is None
    path = tmp_path / "none.tif"
    tifffile.imwrite(path, PIXELS, resolution=(2, 2), resolutionunit="NONE")
    assert pixel_size_of(path) is None


def test_png_and_jpeg_are_no_pixel_size(tmp_path):
    for name in ["a.png", "b.jpg"]:
        Image.fromarray(PIXELS.astype(np.uint8)).save(tmp_path / name, dpi=(300, 300))
        assert pixel_size_of(tmp_path / name) is None


@pytest.mark.parametrize("case", ["garbage", "empty", "text", "truncated"])
def test_corrupt_tiff_names_the_file(tmp_path, case):
    path = tmp_path / "broken.tif"
    if case == "truncated":  # the header of an ImageJ TIFF, cut inside its first IFD
        tifffile.imwrite(path, PIXELS, imagej=True, resolution=(4, 2), metadata={"unit": "um"})
        path.write_bytes(path.read_bytes()[:40])
    else:
        path.write_bytes({"garbage": b"II*\x00garbage", "empty": b"", "text": b"a,b\n1,2\n"}[case])
    with pytest.raises(FileProblem, match="cannot be read as TIFF") as info:
        pixel_size_of(path)
    assert info.value.path == str(path)
    assert str(info.value).startswith(str(path))
    assert "\n" not in str(info.value)


def test_a_given_pixel_size_wins_over_the_file(tmp_path):
    path = ome(tmp_path / "a.ome.tif", 0.5, 0.5, "µm")
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, PIXELS)
    assert pixel_size_for(path, None) == (0.5, 0.5)
    assert pixel_size_for(path, 0.2) == (0.2, 0.2)
    assert pixel_size_for(plain, None) is None
    assert pixel_size_for(plain, 1.5) == (1.5, 1.5)
    for bad in [0, -0.5, float("nan")]:
        with pytest.raises(NucleisegError, match="positive"):
            pixel_size_for(plain, bad)
