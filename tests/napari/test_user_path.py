"""The plugin as a user opens it: every contribution through napari's own code path.

Docks come from the Plugins menu's code (``add_plugin_dock_widget``, which hands
the viewer only to a parameter annotated ``napari.viewer.Viewer``), files from
``viewer.open`` without naming the plugin, samples from ``viewer.open_sample``,
and the buttons are clicked. A dock built by hand in a test once hid that
"Segment nuclei" could not open from the menu at all.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from napari.errors import MultipleReaderError
from napari.layers import Image, Labels
from napari.utils.notifications import NotificationSeverity
from npe2 import PluginManifest
from qtpy.QtWidgets import QPushButton

from napari_nucleiseg._napari import _metadata as meta
from napari_nucleiseg._napari.correct_widget import CorrectWidget
from napari_nucleiseg._napari.segment_widget import SegmentWidget
from napari_nucleiseg._napari.train_widget import TrainWidget
from napari_nucleiseg.io import read_sample
from napari_nucleiseg.io.export import export_sample
from napari_nucleiseg.samples import sample_folder

PLUGIN = "napari-nucleiseg"
WAIT_MS = 30_000
CLASSES = {
    "Segment nuclei": SegmentWidget,
    "Correct masks": CorrectWidget,
    "Train on curated data": TrainWidget,
}


def manifest_widgets() -> list[str]:
    manifest = PluginManifest.from_distribution(PLUGIN)  # the installed one
    return [w.display_name for w in manifest.contributions.widgets]


def errors(notes) -> list[str]:
    return [n.message for n in notes if n.severity >= NotificationSeverity.ERROR]


def click(widget, text: str) -> None:
    """Click the dock's push button labelled ``text`` (exactly one must exist)."""
    buttons = [b for b in widget.native.findChildren(QPushButton) if b.text() == text]
    assert len(buttons) == 1, f"{len(buttons)} buttons labelled {text!r}"
    assert buttons[0].isEnabled(), f"{text!r} is disabled"
    buttons[0].click()


def test_the_manifest_lists_every_dock():
    assert manifest_widgets() == list(CLASSES)


@pytest.mark.parametrize("name", list(CLASSES))
def test_every_dock_opens_from_the_plugins_menu(make_napari_viewer, name, notes):
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-nucleiseg", name)
    assert isinstance(widget, CLASSES[name])
    assert dock.isVisible() or dock.isVisibleTo(viewer.window._qt_window)
    assert errors(notes) == []


def test_samples_and_folders_open_through_napari(make_napari_viewer):
    viewer = make_napari_viewer()
    layers = viewer.open_sample(PLUGIN, "histology")
    assert [type(layer) for layer in layers] == [Image, Labels]
    folder = sample_folder("fluorescence")
    # File > Open Folder: napari offers every reader that accepts the folder in a dialog...
    with pytest.raises(MultipleReaderError) as offered:
        viewer.open(str(folder), plugin=None)
    assert PLUGIN in offered.value.available_plugins
    # ...and opens it with the one the user picks
    opened = viewer.open(str(folder), plugin=PLUGIN)
    assert [type(layer) for layer in opened] == [Image, Labels]
    np.testing.assert_array_equal(opened[1].data, read_sample(folder).labels)


def test_segment_correct_export_from_the_menu(
    make_napari_viewer, qtbot, tiny_checkpoint, tmp_path, notes
):
    """Segment a sample, merge two nuclei, export: the manifest names the model and sample."""
    viewer = make_napari_viewer()
    image, truth = viewer.open_sample(PLUGIN, "fluorescence")
    _, segment = viewer.window.add_plugin_dock_widget("napari-nucleiseg", "Segment nuclei")
    assert segment.load_checkpoint(tiny_checkpoint)  # what 'Load checkpoint…' does
    assert segment._image.value is image and segment._reference.value is truth
    click(segment, "Segment nuclei")
    qtbot.waitUntil(lambda: segment._worker is None, timeout=WAIT_MS)
    nuclei = viewer.layers[f"{image.name} nuclei"]
    assert nuclei.data.max() > 20
    assert nuclei.metadata[meta.MODEL] == str(tiny_checkpoint.resolve())
    assert nuclei.metadata[meta.SAMPLE_ID] == image.metadata[meta.SAMPLE_ID]
    assert nuclei.metadata[meta.POSTPROCESS]["prob_threshold"] == pytest.approx(0.5)

    _, correct = viewer.window.add_plugin_dock_widget("napari-nucleiseg", "Correct masks")
    correct._layer_combo.value = nuclei
    before = nuclei.data.copy()
    sizes = np.bincount(before.ravel())
    sizes[0] = 0
    a, b = (int(i) for i in np.argsort(sizes)[-2:])
    correct._ids.value = f"{a} {b}"
    click(correct, "Merge [G]")
    assert not np.any(nuclei.data == b) or not np.any(nuclei.data == a)
    assert correct.changes().removed + correct.changes().changed >= 1

    root = tmp_path / "curated"
    correct._root.value = root
    correct._image_combo.value = image
    click(correct, "Export sample")
    sample_id = image.metadata[meta.SAMPLE_ID]
    assert correct._sample_id.value == sample_id
    entry = json.loads((root / "manifest.json").read_text())["samples"][sample_id]
    assert entry["model"] == str(tiny_checkpoint.resolve())
    assert entry["source"] == str(sample_folder("fluorescence"))
    exported = read_sample(root / sample_id)
    assert len(np.unique(exported.labels)) - 1 == len(np.unique(nuclei.data)) - 1
    assert errors(notes) == []


def test_train_from_the_menu_and_cancel(make_napari_viewer, qtbot, tiny_checkpoint, tmp_path):
    """Train, click Cancel at the first step: nothing written, no model offered anywhere."""
    root = tmp_path / "curated"
    for kind, split in (("histology", "train"), ("fluorescence", "validation")):
        s = read_sample(sample_folder(kind))
        export_sample(root, s.id, s.image, s.labels, original=s.labels, split=split)
    viewer = make_napari_viewer()
    _, segment = viewer.window.add_plugin_dock_widget("napari-nucleiseg", "Segment nuclei")
    models_before = list(segment._model.choices)
    _, train = viewer.window.add_plugin_dock_widget("napari-nucleiseg", "Train on curated data")
    assert train.load_checkpoint(tiny_checkpoint)
    train.add_root(root)
    train._epochs.value, train._repeats.value, train._batch.value = 50, 1, 2
    train._crop.value, train._device.value = 64, "cpu"
    output = tmp_path / "new.pt"
    train._output.value = output
    click(train, "Train")
    qtbot.waitUntil(lambda: len(train._plot.losses) > 0, timeout=WAIT_MS)
    click(train, "Cancel")
    qtbot.waitUntil(lambda: train._worker is None, timeout=WAIT_MS)
    assert "Cancelled" in train._status.value
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curated"]
    assert list(segment._model.choices) == models_before
