"""io/microscope.py: microscope files through the optional bioio, read from real files
(OME-TIFFs written by tifffile, read by bioio-ome-tiff; a CZI written by pylibCZIrw
where it is installed), and the one-line errors when bioio or a reader is missing."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from conftest import write_czi
from napari_nucleiseg.errors import FileProblem
from napari_nucleiseg.io.images import image_shape, read_image_file
from napari_nucleiseg.io.metadata import pixel_size_of
from napari_nucleiseg.io.microscope import (
    MICROSCOPE_SUFFIXES,
    microscope_pixel_size,
    nuclear_channel,
    read_microscope_file,
)

pytest.importorskip("bioio_ome_tiff", reason="the bioio-ome-tiff reader is not installed")
# bioio-ome-tiff passes ome-types an argument that ome-types now ignores
pytestmark = pytest.mark.filterwarnings("ignore:.*parser argument is ignored:DeprecationWarning")
RNG = np.random.default_rng(0)
PLANES = RNG.integers(0, 4000, (2, 30, 40)).astype(np.uint16)


def ome_tiff(path, data, axes, names=None, size=None):
    metadata: dict = {"axes": axes}
    if names is not None:
        metadata["Channel"] = {"Name": names}
    if size is not None:
        metadata.update(
            PhysicalSizeY=size[0], PhysicalSizeX=size[1], PhysicalSizeYUnit="µm",
            PhysicalSizeXUnit="µm",
        )  # fmt: skip
    tifffile.imwrite(path, data, ome=True, photometric="minisblack", metadata=metadata)
    return path


@pytest.fixture
def two_channels(tmp_path):
    """GFP first, DAPI second, 0.325 x 0.4 µm pixels."""
    return ome_tiff(tmp_path / "cells.ome.tif", PLANES, "CYX", ["GFP", "DAPI"], (0.325, 0.4))


def test_the_nuclear_channel_and_its_pixel_size(two_channels):
    found = read_microscope_file(two_channels)
    assert found.channel == "DAPI"
    assert found.data.shape == (30, 40) and found.data.dtype == np.uint16
    np.testing.assert_array_equal(found.data, PLANES[1])
    assert found.pixel_size == pytest.approx((0.325, 0.4))


def test_a_channel_by_name_or_index(two_channels):
    for channel, index in [("GFP", 0), ("DAPI", 1), (0, 0), (1, 1)]:
        found = read_microscope_file(two_channels, channel=channel)
        np.testing.assert_array_equal(found.data, PLANES[index])
        assert found.channel == ["GFP", "DAPI"][index]
    with pytest.raises(FileProblem, match="has no channel 'mCherry'") as info:
        read_microscope_file(two_channels, channel="mCherry")
    assert "GFP" in str(info.value) and "DAPI" in str(info.value)
    assert info.value.path == str(two_channels)


def test_names_without_a_nuclear_stain_are_listed(tmp_path):
    path = ome_tiff(tmp_path / "no.ome.tif", PLANES, "CYX", ["GFP", "mCherry"])
    with pytest.raises(FileProblem) as info:
        read_microscope_file(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert "GFP" in message and "mCherry" in message and "2 channels" in message


def test_one_channel_needs_no_name(tmp_path):
    path = ome_tiff(tmp_path / "one.ome.tif", PLANES[:1], "CYX", ["GFP"])
    np.testing.assert_array_equal(read_microscope_file(path).data, PLANES[0])
    path = ome_tiff(tmp_path / "plain.ome.tif", PLANES[0], "YX")
    found = read_microscope_file(path)
    np.testing.assert_array_equal(found.data, PLANES[0])
    assert found.pixel_size is None and microscope_pixel_size(path) is None


@pytest.mark.parametrize(
    "names,index",
    [
        (["GFP", "DAPI"], 1),
        (["Hoechst 33342", "GFP"], 0),
        (["EGFP", "mCherry", "DRAQ5"], 2),
        (["H2B-mCherry", "Tubulin"], 0),
        (["TRITC", "Cy5"], None),
        ([], None),
    ],
)
def test_nuclear_channel(names, index):
    assert nuclear_channel(names) == index


def test_a_z_stack_or_time_series_is_refused(tmp_path):
    stack = RNG.integers(0, 9, (3, 30, 40)).astype(np.uint16)
    for axes, what in [("ZYX", "Z-stack of 3 planes"), ("TYX", "time series of 3 planes")]:
        path = ome_tiff(tmp_path / f"{axes}.ome.tif", stack, axes)
        with pytest.raises(FileProblem, match=what) as info:
            read_microscope_file(path)
        assert info.value.path == str(path)


def test_without_bioio_the_error_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "bioio", None)  # as if not installed
    path = tmp_path / "x.czi"
    path.write_bytes(b"ZISRAWFILE" + bytes(100))
    for read in [read_image_file, image_shape, pixel_size_of, read_microscope_file]:
        with pytest.raises(FileProblem) as info:
            read(path)
        message = str(info.value)
        assert "napari-nucleiseg[bioio]" in message, read
        assert message.startswith(str(path)) and "\n" not in message


@pytest.fixture
def no_czi_reader(monkeypatch):
    """bioio installed, but no reader registered for CZI: its plugin entry point hidden."""
    import bioio.plugins

    real = bioio.plugins.entry_points

    def without_czi(**kwargs):
        return [ep for ep in real(**kwargs) if "czi" not in ep.name]

    monkeypatch.setattr(bioio.plugins, "entry_points", without_czi)


def test_without_a_czi_reader_the_error_names_it(tmp_path, no_czi_reader):
    path = tmp_path / "x.czi"
    path.write_bytes(b"ZISRAWFILE" + bytes(100))
    for read in [read_image_file, image_shape, read_microscope_file]:
        with pytest.raises(FileProblem) as info:
            read(path)
        message = str(info.value)
        assert "bioio-czi" in message and message.startswith(str(path)), message
        assert "\n" not in message


def test_a_missing_microscope_file(tmp_path):
    with pytest.raises(FileProblem, match="does not exist"):
        read_microscope_file(tmp_path / "gone.czi")
    with pytest.raises(FileProblem, match="does not exist"):
        read_image_file(tmp_path / "gone.nd2")


def test_a_corrupt_czi_with_its_reader_installed_is_not_called_missing(tmp_path):
    """bioio-czi installed and the file broken: 'install bioio-czi' would send the user
    to install what they have; the error says the file cannot be read."""
    pytest.importorskip("bioio_czi", reason="bioio-czi is not installed")
    path = tmp_path / "broken.czi"
    path.write_bytes(b"ZISRAWFILE" + bytes(100))
    with pytest.raises(FileProblem) as info:
        read_image_file(path)
    message = str(info.value)
    assert message.startswith(str(path))
    assert "pip install" not in message and "is installed" not in message, message


def test_images_routes_microscope_suffixes_to_bioio(tmp_path):
    """A real CZI (GFP then DAPI, 0.325 µm) read through io/images and io/metadata."""
    planes = [RNG.integers(0, 255, (40, 50), dtype=np.uint8) for _ in range(2)]
    path = write_czi(tmp_path / "cells.CZI", planes)
    assert ".czi" in MICROSCOPE_SUFFIXES
    np.testing.assert_array_equal(read_image_file(path), planes[1])
    assert image_shape(path) == (40, 50)
    assert pixel_size_of(path) == pytest.approx((0.325, 0.325))


def test_importing_the_core_imports_no_optional_reader():
    code = (
        "import sys, json\n"
        "import napari_nucleiseg, napari_nucleiseg.io.images\n"
        "import napari_nucleiseg.io.metadata, napari_nucleiseg.io.formats\n"
        "import napari_nucleiseg.measure\n"
        "print(json.dumps([m for m in ('bioio', 'bioio_base', 'roifile', 'zarr', 'ome_zarr')"
        " if m in sys.modules]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
