"""Segment a folder from the Segment dock (issue 17): a real viewer under Xvfb, the dock opened
from the Plugins menu, the batch run in its worker, the results browsed and corrected."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from PIL import Image as PILImage

from conftest import open_dock, tree_digest
from napari_nucleiseg.io.images import read_label_image

WAIT_MS = 60_000


@pytest.fixture
def dock(make_napari_viewer, tiny_checkpoint):
    viewer = make_napari_viewer()
    widget = open_dock(viewer, "Segment nuclei")
    assert widget.load_checkpoint(tiny_checkpoint)
    return widget


@pytest.fixture
def folder(tmp_path, small_samples):
    """A plain folder of the small real samples' images: grey and colour, two sizes."""
    images = tmp_path / "images"
    images.mkdir()
    for sample in small_samples:
        shutil.copy(sample / "images" / f"{sample.name}.png", images / f"{sample.name[:8]}.png")
    return images


def run(qtbot, panel):
    panel.run()
    assert panel._worker is not None
    qtbot.waitUntil(lambda: panel._worker is None, timeout=WAIT_MS)


def test_folder_run_writes_labels_outputs_and_one_table(qtbot, dock, folder, tmp_path):
    panel = dock.folder_panel
    panel.folder.value = folder
    out = tmp_path / "out"
    panel.output.value = out
    panel.formats["roi"].value = True
    steps = []
    panel.progress.changed.connect(steps.append)
    run(qtbot, panel)
    ids = sorted(p.stem for p in folder.iterdir())
    assert sorted(p.name for p in out.glob("*.tif")) == [f"{i}.tif" for i in ids]
    assert sorted(p.name for p in out.glob("*.zip")) == [f"{i}.zip" for i in ids]
    with open(out / "measurements.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for image_id in ids:  # one row per nucleus of each label image
        labels = read_label_image(out / f"{image_id}.tif")
        mine = [int(r["label"]) for r in rows if r["image"] == image_id]
        assert mine == sorted(set(np.unique(labels)) - {0})
    assert len(steps) > len(ids)  # progress moved within and between images
    assert "nuclei in" in panel.status.value
    # browsed as lazy stacks under a slider, one image per step
    viewer = dock._viewer
    images = viewer.layers["folder results"]
    nuclei = viewer.layers["folder results nuclei"]
    assert images.data.shape[0] == nuclei.data.shape[0] == len(ids)
    from napari_nucleiseg._napari.reader import text_overlay

    for index in (0, 2):  # the id of the image on screen, on the canvas
        viewer.dims.set_current_step(0, index)
        assert text_overlay(viewer).text.startswith(ids[index])
    first = read_label_image(out / f"{ids[0]}.tif")
    h, w = first.shape
    np.testing.assert_array_equal(np.asarray(nuclei.data[0])[:h, :w], first)


def test_correct_the_image_on_screen_opens_it_in_2d(qtbot, dock, folder, tmp_path):
    panel = dock.folder_panel
    panel.folder.value = folder
    panel.output.value = tmp_path / "out"
    run(qtbot, panel)
    viewer = dock._viewer
    viewer.dims.set_current_step(0, 1)
    panel.open_on_screen()
    image_id = sorted(p.stem for p in folder.iterdir())[1]
    labels = viewer.layers[f"{image_id} nuclei"]
    assert labels.data.ndim == 2
    np.testing.assert_array_equal(
        labels.data, read_label_image(tmp_path / "out" / f"{image_id}.tif")
    )
    original = np.asarray(PILImage.open(folder / f"{image_id}.png"))
    np.testing.assert_array_equal(viewer.layers[image_id].data, original)
    # the Correct masks dock takes it as a 2-D layer to edit: a merge of two nuclei works
    correct = open_dock(viewer, "Correct masks")
    correct._layer_combo.value = labels
    assert correct.merge([1, 2])
    assert 2 not in labels.data and 1 in labels.data


def test_cancel_keeps_finished_images_and_resume_goes_on(qtbot, dock, folder, tmp_path):
    panel = dock.folder_panel
    panel.folder.value = folder
    out = tmp_path / "out"
    panel.output.value = out
    first_done = []

    def cancel_after_first(value):
        if list(out.glob("*.tif")) and not first_done:
            first_done.append(True)
            panel.cancel()

    panel.progress.changed.connect(cancel_after_first)
    run(qtbot, panel)
    assert "Cancelled" in panel.status.value
    kept = sorted(out.glob("*.tif"))
    assert 1 <= len(kept) < len(list(folder.iterdir()))
    assert not list(out.glob(".*partial"))  # no half-written file
    stamps = {p: p.stat().st_mtime_ns for p in kept}
    panel.progress.changed.disconnect(cancel_after_first)
    panel.resume.value = True
    run(qtbot, panel)
    assert len(list(out.glob("*.tif"))) == len(list(folder.iterdir()))
    assert {p: p.stat().st_mtime_ns for p in kept} == stamps  # earlier outputs kept as they were


def test_existing_outputs_are_refused_and_kept(qtbot, dock, folder, tmp_path, notes):
    panel = dock.folder_panel
    panel.folder.value = folder
    out = tmp_path / "out"
    panel.output.value = out
    run(qtbot, panel)
    before = tree_digest(out)
    run(qtbot, panel)
    assert "already exists" in panel.status.value and "Overwrite" in panel.status.value
    assert any("already exists" in str(n.message) for n in notes)
    assert tree_digest(out) == before


def test_a_pixel_size_set_in_the_dock_measures_every_image_in_micrometres(
    qtbot, dock, folder, tmp_path
):
    panel = dock.folder_panel
    panel.folder.value = folder
    out = tmp_path / "out"
    panel.output.value = out
    panel.pixel_size.value = 0.25
    run(qtbot, panel)
    with open(out / "measurements.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(r["area_um2"] for r in rows) and "area_px2" not in rows[0]
    labels = read_label_image(out / f"{rows[0]['image']}.tif")
    area = float(rows[0]["area_um2"])
    assert area == pytest.approx((labels == int(rows[0]["label"])).sum() * 0.0625)
