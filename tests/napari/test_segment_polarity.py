"""The Segment dock's Polarity and Channel choices in a real viewer (run under xvfb-run): they
change the labels as ``nucleiseg predict --invert`` and ``--channel`` do, for the image on
screen and for a folder."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image as PILImage
from scipy import ndimage as ndi

from conftest import judged, open_dock
from napari_nucleiseg.io import read_sample
from napari_nucleiseg.io.images import read_label_image
from napari_nucleiseg.samples import sample_folder

WAIT_MS = 60_000


@pytest.fixture(scope="module")
def grey():
    image = read_sample(sample_folder("fluorescence")).image
    return np.ascontiguousarray(image[..., 0] if image.ndim == 3 else image)


@pytest.fixture(scope="module")
def composite(grey):
    """The grey image as the red channel; a cytoplasm stain around the nuclei in green."""
    cytoplasm = 0.8 * ndi.gaussian_filter(ndi.grey_dilation(grey, size=9), 2).astype(float)
    rgb = np.stack([grey, np.clip(cytoplasm, 0, 255), np.zeros_like(grey)], axis=-1)
    return rgb.astype(np.uint8)


@pytest.fixture
def dock(make_napari_viewer, tiny_checkpoint):
    widget = open_dock(make_napari_viewer(), "Segment nuclei")
    assert widget.load_checkpoint(tiny_checkpoint)
    return widget


def segment(qtbot, widget) -> np.ndarray:
    judged(qtbot, widget)
    widget.run()
    assert widget._worker is not None
    qtbot.waitUntil(lambda: widget._worker is None, timeout=WAIT_MS)
    return np.asarray(widget._viewer.layers[f"{widget._image.value.name} nuclei"].data)


def test_a_diameter_in_microns_follows_the_layers_scale(qtbot, shipped_dock, grey, tmp_path):
    """75 µm on a layer of 0.5 µm pixels is 150 px; a layer without a pixel size is refused
    in the status line; a folder run turns µm into each file's pixels (or the Pixel size)."""
    dock = shipped_dock
    viewer = dock._viewer
    viewer.add_image(grey, name="cells")
    dock._diameter.value = 150
    in_px = segment(qtbot, dock)
    assert 0 < in_px.max()
    dock._diameter_unit.value = "µm"
    dock._diameter.value = 75
    dock.run()  # no pixel size: not run, said
    assert dock._worker is None and "cells: has no pixel size" in dock._status.value
    viewer.layers["cells"].scale = (0.5, 0.5)
    np.testing.assert_array_equal(segment(qtbot, dock), in_px)
    folder = tmp_path / "images"
    folder.mkdir()
    PILImage.fromarray(grey).save(folder / "cells.png")
    panel = dock.folder_panel
    panel.folder.value = folder
    for pixel_size, out in ((0.0, tmp_path / "unsized"), (0.5, tmp_path / "sized")):
        panel.pixel_size.value = pixel_size  # 0: what each file records (a PNG: none)
        panel.output.value = out
        panel.run()
        qtbot.waitUntil(lambda: panel._worker is None, timeout=WAIT_MS)
        if not pixel_size:
            assert "cells.png: has no pixel size" in panel.status.value
            assert not out.exists()
    np.testing.assert_array_equal(read_label_image(tmp_path / "sized" / "cells.tif"), in_px)


def test_polarity_changes_the_labels(qtbot, dock, grey):
    dock._viewer.add_image(grey, name="cells")
    assert dock._polarity.value == "auto"
    auto = segment(qtbot, dock)
    assert auto.max() > 20
    dock._polarity.value = "always"  # Dark nuclei: this fluorescence image inverted
    dark = segment(qtbot, dock)
    assert dark.max() < auto.max() / 2
    dock._polarity.value = "never"  # Bright nuclei: what auto decided for it
    np.testing.assert_array_equal(segment(qtbot, dock), auto)
    labels = [dock._polarity.native.itemText(i) for i in range(dock._polarity.native.count())]
    assert labels == ["Auto", "Bright nuclei", "Dark nuclei"]


def test_channel_is_offered_for_rgb_layers_and_segments_it_alone(qtbot, dock, grey, composite):
    viewer = dock._viewer
    viewer.add_image(grey, name="nuclei")
    assert dock._channel.native.isHidden()  # a grey layer has one channel
    assert [dock._channel.native.itemText(i) for i in range(dock._channel.native.count())] == [
        "Auto"
    ]
    alone = segment(qtbot, dock)
    viewer.add_image(composite, name="composite", rgb=True)
    assert dock._image.value.name == "composite"
    assert not dock._channel.native.isHidden()
    names = [dock._channel.native.itemText(i) for i in range(dock._channel.native.count())]
    assert names == ["Auto", "Red", "Green", "Blue"]
    mixed = segment(qtbot, dock)  # Auto: the mean of the channels
    assert not np.array_equal(mixed, alone)
    dock._channel.value = 0  # Red
    np.testing.assert_array_equal(segment(qtbot, dock), alone)
    dock._image.value = viewer.layers["nuclei"]  # back to grey: back to Auto, hidden
    assert dock._channel.value is None and dock._channel.native.isHidden()


def test_a_folder_run_takes_the_docks_choices(qtbot, dock, grey, composite, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    PILImage.fromarray(composite).save(folder / "composite.png")
    dock._viewer.add_image(composite, name="composite", rgb=True)
    dock._channel.value = 0
    dock._polarity.value = "always"
    single = segment(qtbot, dock)
    panel = dock.folder_panel
    panel.folder.value = folder
    panel.output.value = tmp_path / "out"
    panel.run()
    qtbot.waitUntil(lambda: panel._worker is None, timeout=WAIT_MS)
    np.testing.assert_array_equal(read_label_image(tmp_path / "out" / "composite.tif"), single)
    dock._channel.value = 2  # Blue, then a grey image in the folder: refused in one line
    PILImage.fromarray(grey).save(folder / "grey.png")
    panel.output.value = tmp_path / "out2"
    panel.run()
    qtbot.waitUntil(lambda: panel._worker is None, timeout=WAIT_MS)
    assert "grey.png: has 1 channel (0): there is no channel 2" in panel.status.value
    assert not (tmp_path / "out2").exists()


@pytest.fixture
def shipped_dock(make_napari_viewer):
    return open_dock(make_napari_viewer(), "Segment nuclei")  # the default model


def test_the_diameter_box_resizes_for_the_network(qtbot, shipped_dock, grey):
    """Auto (0) leaves nuclei the shipped model knows as they are; a diameter told
    resizes the image for the network and brings the labels back at its size."""
    dock = shipped_dock
    assert dock._model.chosen is not None
    dock._viewer.add_image(grey, name="cells")
    assert dock._diameter.value == 0 and dock._diameter.native.text() == "Auto"
    auto = segment(qtbot, dock)
    dock._diameter.value = 150  # told the nuclei are 150 px: shrunk to 53-px nuclei
    told = segment(qtbot, dock)
    assert told.shape == auto.shape == grey.shape
    assert 0 < told.max() < auto.max()
    dock._diameter.value = 0
    np.testing.assert_array_equal(segment(qtbot, dock), auto)
