"""The Segment dock's "Measurements and outputs" section in a real viewer (run under xvfb-run):
measurements as the Labels layer's features, napari's features table following the cursor,
the table as CSV and the labels in the files of other tools.

The shipped fluorescence sample is opened through the plugin's reader and segmented by the
tiny U-Net of ``tiny_checkpoint`` (about a second).
"""

from __future__ import annotations

import csv
import json
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest
import roifile
import tifffile
from napari.layers import Image
from napari.utils.notifications import NotificationSeverity
from shapely.geometry import shape

from conftest import open_dock, tree_digest
from napari_nucleiseg import measure
from napari_nucleiseg._napari import _metadata as meta
from napari_nucleiseg._napari.results_panel import (
    FEATURES_TABLE,
    Measuring,
    ResultsPanel,
    pixel_size_um,
)
from napari_nucleiseg.samples import sample_folder

WAIT_MS = 30_000


def segmented(viewer, qtbot, checkpoint, scale=None):
    """(dock, image layer, labels layer) after one Segment run on the fluorescence sample."""
    widget = open_dock(viewer, "Segment nuclei")
    assert widget.load_checkpoint(checkpoint)
    image, _masks = viewer.open(sample_folder("fluorescence"), plugin="napari-nucleiseg")
    if scale is not None:
        image.scale = scale
    assert widget._image.value is image
    widget._run.native.click()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=WAIT_MS)
    labels = viewer.layers[f"{image.name} nuclei"]
    return widget, image, getattr(labels, "__wrapped__", labels)


def features_of(table: dict) -> dict:
    return {k: np.asarray(v) for k, v in measure.features(table).items()}


def assert_features_equal(layer, table: dict) -> None:
    expected = features_of(table)
    assert list(layer.features.columns) == list(expected)
    for name, column in expected.items():
        np.testing.assert_allclose(layer.features[name].to_numpy(), column, err_msg=name)


def test_outputs_of_an_ome_tiff_layer_are_named_without_ome(make_napari_viewer):
    viewer = make_napari_viewer()
    panel = open_dock(viewer, "Segment nuclei").results
    panel._image = Image(np.zeros((4, 4)), name="cells.ome")  # napari's name for cells.ome.tif
    assert panel.output_name() == "cells"  # so cells.tif, cells.ome.tif: not cells.ome.ome.tif


def test_pixel_size_from_the_layer_scale_and_units():
    layer = Image(np.zeros((4, 4)))
    assert pixel_size_um(layer) is None  # scale 1 in pixels: measured in px
    layer.scale = (0.5, 0.5)
    assert pixel_size_um(layer) == (0.5, 0.5)  # pixels with a scale: the scale is in µm
    layer.units = ("nm", "nm")
    layer.scale = (250, 250)
    assert pixel_size_um(layer) == pytest.approx((0.25, 0.25))
    layer.units = ("mm", "mm")
    layer.scale = (0.001, 0.001)
    assert pixel_size_um(layer) == pytest.approx((1.0, 1.0))
    layer.units = ("s", "s")
    assert pixel_size_um(layer) is None
    stack = Image(np.zeros((3, 4, 4)), scale=(5, 0.2, 0.2))  # the plane axis is not a pixel
    assert pixel_size_um(stack) == pytest.approx((0.2, 0.2))


def test_segment_puts_the_measurements_on_the_labels(make_napari_viewer, qtbot, tiny_checkpoint):
    viewer = make_napari_viewer()
    widget, image, labels = segmented(viewer, qtbot, tiny_checkpoint, scale=(0.5, 0.5))
    np.testing.assert_array_equal(labels.scale, image.scale)
    n = int(labels.data.max())
    assert n > 20 and len(labels.features) == n + 1  # row i holds label i, row 0 the background
    np.testing.assert_array_equal(labels.features["label"], np.arange(n + 1))
    assert_features_equal(labels, measure.measure(labels.data, image.data, 0.5))
    assert "area_um2" in labels.features and "area_px2" not in labels.features
    pixels = np.bincount(labels.data.ravel(), minlength=n + 1)[1:]
    np.testing.assert_allclose(labels.features["area_um2"][1:], pixels * 0.25)
    assert f"{n} nuclei measured, in µm" in widget.results.status.value
    # a threshold change re-labels, and the measurements follow
    before = labels.data.copy()
    widget._prob.value = 0.7
    qtbot.waitUntil(lambda: not np.array_equal(labels.data, before), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: widget._relabel_worker is None, timeout=WAIT_MS)
    assert_features_equal(labels, measure.measure(labels.data, image.data, 0.5))
    assert not widget.results.stale


def test_a_stack_is_not_measured(make_napari_viewer, qtbot, tiny_checkpoint):
    viewer = make_napari_viewer()
    widget = open_dock(viewer, "Segment nuclei")
    assert widget.load_checkpoint(tiny_checkpoint)
    image, _ = viewer.open(sample_folder("fluorescence"), plugin="napari-nucleiseg")
    grey = np.asarray(image.data)[..., 0] if image.rgb else np.asarray(image.data)
    viewer.add_image(np.stack([grey[:128, :128], grey[-128:, -128:]]), name="stack")
    widget._run.native.click()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=WAIT_MS)
    labels = viewer.layers["stack nuclei"]
    assert labels.data.max() > 0 and labels.features.shape[1] == 0
    assert "per 2-D image" in widget.results.status.value
    assert not widget.results.save_outputs_button.enabled


def test_save_table_writes_a_csv_that_reads_back(
    make_napari_viewer, qtbot, tiny_checkpoint, tmp_path, monkeypatch
):
    viewer = make_napari_viewer()
    widget, image, labels = segmented(viewer, qtbot, tiny_checkpoint)
    panel = widget.results
    asked = []
    monkeypatch.setattr(
        ResultsPanel, "ask_table_path", lambda self, name: asked.append(name) or tmp_path / "t"
    )  # (on the class: a magicgui Container takes an instance attribute for a widget)
    panel.save_table_button.native.click()
    sample_id = image.metadata[meta.SAMPLE_ID]
    assert asked == [f"{sample_id}_measurements.csv"]
    with open(tmp_path / "t.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    table = measure.measure(labels.data, image.data)
    assert len(rows) == len(table["label"]) == labels.data.max()  # no background row
    assert list(rows[0]) == list(table)
    for name, column in table.items():
        np.testing.assert_array_equal([float(row[name]) for row in rows], column)


def test_save_outputs_writes_the_formats_and_asks_before_replacing(
    make_napari_viewer, qtbot, tiny_checkpoint, tmp_path, monkeypatch, notes
):
    viewer = make_napari_viewer()
    widget, image, labels = segmented(viewer, qtbot, tiny_checkpoint, scale=(0.5, 0.5))
    panel = widget.results
    for box in panel.formats.values():
        box.value = True
    monkeypatch.setattr(ResultsPanel, "ask_folder", lambda self: str(tmp_path))
    answers = []
    monkeypatch.setattr(ResultsPanel, "ask_replace", lambda self, paths: answers.pop(0))
    panel.save_outputs_button.native.click()
    qtbot.waitUntil(lambda: panel.status.value.startswith("Saved"), timeout=WAIT_MS)
    stem = image.metadata[meta.SAMPLE_ID]
    n = int(labels.data.max())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{stem}{s}" for s in (".tif", ".zip", ".geojson", ".ome.tif", ".ome.zarr")
    )
    np.testing.assert_array_equal(tifffile.imread(tmp_path / f"{stem}.tif"), labels.data)
    rois = roifile.roiread(tmp_path / f"{stem}.zip")
    assert len(rois) == n
    collection = json.loads((tmp_path / f"{stem}.geojson").read_text())
    assert len(collection["features"]) == n
    assert all(shape(f["geometry"]).is_valid for f in collection["features"])
    assert "area_um2" in collection["features"][0]["properties"]["measurements"]
    with tifffile.TiffFile(tmp_path / f"{stem}.ome.tif") as tif:
        assert 'PhysicalSizeX="0.5"' in tif.ome_metadata
    # an existing file is not replaced when the user declines
    before = tree_digest(tmp_path)
    answers.append(False)
    assert panel.save_outputs() is None
    assert tree_digest(tmp_path) == before and not answers
    warned = [n.message for n in notes if n.severity == NotificationSeverity.WARNING]
    assert warned and f"{stem}.tif" in warned[-1] and "\n" not in warned[-1]
    # ... and is, when the user agrees
    labels.data = np.zeros_like(labels.data)
    answers.append(True)
    panel.status.value = ""
    panel.save_outputs()
    qtbot.waitUntil(lambda: panel.status.value.startswith("Saved"), timeout=WAIT_MS)
    assert tifffile.imread(tmp_path / f"{stem}.tif").max() == 0
    with zipfile.ZipFile(tmp_path / f"{stem}.zip") as roi_zip:
        assert roi_zip.namelist() == []
    # never the image's own file, whatever the answer
    image.metadata[meta.SOURCE] = str(tmp_path / f"{stem}.tif")
    answers.append(True)
    assert panel.save_outputs() is None and answers == [True]
    assert "image's own file" in notes[-1].message


def test_show_table_and_follow_the_cursor(make_napari_viewer, qtbot, tiny_checkpoint):
    viewer = make_napari_viewer()
    widget, image, labels = segmented(viewer, qtbot, tiny_checkpoint, scale=(0.5, 0.5))
    panel = widget.results
    viewer.layers.selection.active = image
    panel.table_button.native.click()
    _, table = viewer.window.add_plugin_dock_widget(*FEATURES_TABLE)  # the open one
    assert viewer.layers.selection.active is labels
    assert table.table.model().rowCount() == len(labels.features)

    label = int(labels.data.max())  # the last row: the table scrolls to it
    pixel = np.argwhere(labels.data == label)[0]
    event = SimpleNamespace(position=labels.data_to_world(pixel))  # napari's are in world units
    (follow,) = [c for c in labels.mouse_move_callbacks if c == panel._follow_cursor]
    labels.mode = "paint"
    brush = labels.selected_label
    follow(labels, event)
    assert labels.selected_label == brush != label  # painting keeps its label
    labels.mode = "pan_zoom"
    follow(labels, event)
    assert labels.selected_label == label
    rows = table.table.selectionModel().selectedRows()
    assert [table.table.model().mapToSource(r).row() for r in rows] == [label]
    assert table.table.verticalScrollBar().value() > 0
    panel.follow.value = False
    follow(labels, SimpleNamespace(position=labels.data_to_world(np.argwhere(labels.data == 1)[0])))
    assert labels.selected_label == label
    labels.mode = "paint"  # back to painting: the brush has its own label again, not the hovered
    assert labels.selected_label == brush
    labels.mode = "pan_zoom"

    viewer.window.remove_dock_widget(widget.native)  # the dock goes: so does its callback
    assert panel._follow_cursor not in labels.mouse_move_callbacks


def test_painting_makes_the_table_stale_and_measure_refreshes_it(
    make_napari_viewer, qtbot, tiny_checkpoint
):
    viewer = make_napari_viewer()
    widget, image, labels = segmented(viewer, qtbot, tiny_checkpoint)
    panel = widget.results
    assert not panel.stale
    new = int(labels.data.max()) + 1
    labels.paint((5, 5), new)  # the brush, as a user paints
    assert panel.stale and "press Measure" in panel.status.value
    assert len(labels.features) == new  # not measured yet
    panel.measure_button.native.click()
    qtbot.waitUntil(lambda: not panel.stale, timeout=WAIT_MS)
    assert len(labels.features) == new + 1
    assert labels.features["area_px2"][new] == np.count_nonzero(labels.data == new)
    assert_features_equal(labels, measure.measure(labels.data, image.data))
    # the labels layer goes: the panel lets it go
    viewer.layers.remove(labels)
    assert not panel.measure_button.enabled


def test_measuring_without_an_image_uses_the_labels_geometry():
    from napari.layers import Labels

    data = np.zeros((32, 32), np.int32)
    data[4:8, 4:10] = 3
    layer = Labels(data, scale=(2, 2), units=("um", "um"))
    result = Measuring.of(None, layer)(data)
    assert result.table["area_um2"].tolist() == [24 * 4.0]
    assert "mean_intensity" not in result.table


def test_an_ome_tiff_opened_by_napari_is_measured_in_its_own_micrometres(
    make_napari_viewer, qtbot, tmp_path, tiny_checkpoint
):
    """napari's own reader leaves the scale at 1; the pixel size comes from the file."""
    from napari_nucleiseg.io import read_sample

    sample = read_sample(sample_folder("fluorescence"))
    grey = sample.image if sample.image.ndim == 2 else sample.image[..., 0]
    path = tmp_path / "cells.ome.tif"
    tifffile.imwrite(
        path, grey, ome=True,
        metadata={"axes": "YX", "PhysicalSizeX": 0.4, "PhysicalSizeY": 0.4},
    )  # fmt: skip
    viewer = make_napari_viewer()
    widget = open_dock(viewer, "Segment nuclei")
    assert widget.load_checkpoint(tiny_checkpoint)
    (image,) = viewer.open(path, plugin="napari")
    assert tuple(image.scale) == (1, 1)
    widget._image.value = image
    widget._run.native.click()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=WAIT_MS)
    labels = viewer.layers[f"{image.name} nuclei"]
    area = labels.features["area_um2"].to_numpy()[1:]
    counts = np.bincount(np.asarray(labels.data).ravel())[1:]
    present = counts > 0
    np.testing.assert_allclose(area[present], counts[present] * 0.16)
