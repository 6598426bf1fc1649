"""The "Correct masks" widget in a real viewer: correct, count, undo, export, re-open."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Labels

from conftest import open_dock, tree_digest
from napari_nucleiseg._napari import _metadata as meta
from napari_nucleiseg._napari.correct_widget import KEYS, CorrectWidget
from napari_nucleiseg._napari.export_panel import ExportPanel
from napari_nucleiseg.edit import compare_labels
from napari_nucleiseg.io import read_sample
from napari_nucleiseg.io.manifest import read_manifest
from napari_nucleiseg.samples import sample_folder


def largest(labels: np.ndarray, k: int) -> list[int]:
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return [int(i) for i in np.argsort(sizes)[::-1][:k]]


def inside(labels: np.ndarray, label: int) -> tuple[float, float]:
    """A pixel well inside a nucleus (its deepest point)."""
    from scipy import ndimage as ndi

    depth = ndi.distance_transform_edt(labels == label)
    r, c = np.unravel_index(np.argmax(depth), depth.shape)
    return float(r), float(c)


@pytest.fixture
def opened(make_napari_viewer):
    """A viewer with the fluorescence sample opened by our reader and the widget docked."""
    viewer = make_napari_viewer()
    viewer.open(str(sample_folder("fluorescence")), plugin="napari-nucleiseg")
    widget = open_dock(viewer, "Correct masks")
    labels = next(layer for layer in viewer.layers if isinstance(layer, Labels))
    widget.reset_choices()
    return viewer, widget, labels


def test_widget_finds_layers_and_binds_keys(opened):
    viewer, widget, labels = opened
    assert widget.layer is labels
    assert widget._image_combo.value is viewer.layers[0]
    assert widget._sample_id.value == labels.metadata["sample_id"]
    assert np.array_equal(labels.metadata[meta.BASELINE], labels.data)
    bound = {str(k) for k in labels.keymap}
    assert set(KEYS) <= bound
    assert widget._count.value.startswith("Since loaded: 0 added, 0 removed, 0 changed")


def test_delete_and_undo_with_napari_history(opened):
    viewer, widget, labels = opened
    original = labels.data.copy()
    a = largest(original, 1)[0]
    widget.key_action("delete", inside(original, a))
    assert not np.any(labels.data == a)
    c = widget.changes()
    assert (c.added, c.removed, c.changed) == (0, 1, 0)
    assert "1 removed" in widget._count.value
    # Ctrl+Z: napari's own binding on the Labels layer undoes our operation in one step
    from app_model.types import KeyCode, KeyMod
    from napari.utils.key_bindings import coerce_keybinding

    undo = type(labels).class_keymap[coerce_keybinding(KeyMod.CtrlCmd | KeyCode.KeyZ)]
    undo(labels)
    assert np.array_equal(labels.data, original)
    widget.update_count()
    assert widget.changes().total == 0
    labels.redo()
    assert not np.any(labels.data == a)


def test_merge_split_and_count(opened):
    viewer, widget, labels = opened
    original = labels.data.copy()
    n = len(np.unique(original)) - 1
    a, b, c = largest(original, 3)
    widget.key_action("merge", inside(original, a))
    assert np.array_equal(labels.data, original)  # one pick: nothing yet
    widget.key_action("merge", inside(original, b))
    union = (original == a) | (original == b)
    assert np.array_equal(labels.data == min(a, b), union)
    assert len(np.unique(labels.data)) - 1 == n - 1
    # split c with two seeds at the ends of its long axis
    rows, cols = np.nonzero(original == c)
    coords = np.stack([rows, cols], 1).astype(float)
    centre = coords.mean(0)
    axis = np.linalg.svd(coords - centre, full_matrices=False)[2][0]
    proj = (coords - centre) @ axis
    seeds = [tuple(coords[np.argmin(np.abs(proj - t))]) for t in (proj.min() / 2, proj.max() / 2)]
    free = int(labels.data.max()) + 1
    widget.key_action("split", seeds[0])
    widget.key_action("split", seeds[1])
    assert np.array_equal((labels.data == c) | (labels.data == free), original == c)
    assert np.any(labels.data == free) and np.any(labels.data == c)
    changes = widget.changes()
    assert (changes.added, changes.removed, changes.changed) == (1, 1, 2)
    assert changes.unchanged == n - 3
    # three undos give the sample back
    labels.undo()
    labels.undo()
    assert np.array_equal(labels.data, original)


def test_split_along_drawn_line_and_buttons(opened):
    viewer, widget, labels = opened
    original = labels.data.copy()
    a = largest(original, 1)[0]
    assert widget.split_along_line() is False  # creates the layer to draw in
    shapes = viewer.layers["split line"]
    rows, cols = np.nonzero(original == a)
    r = float(round(rows.mean()))
    shapes.add_paths([np.array([[r, cols.min() - 3.0], [r, cols.max() + 3.0]])])
    assert widget.split_along_line() is True
    assert len(np.unique(labels.data)) == len(np.unique(original)) + 1
    assert len(shapes.data) == 0
    # the buttons' methods with the Nuclei field
    widget._ids.value = f"{a}"
    assert widget.delete()
    assert not np.any(labels.data == a)
    assert widget.remove_small(10_000)
    assert not labels.data.any()
    assert widget.renumber() is False  # nothing left to renumber
    for _ in range(3):
        labels.undo()
    assert np.array_equal(labels.data, original)
    label = widget.new_label()
    assert label == int(original.max()) + 1 and labels.selected_label == label
    assert labels.mode == "paint"


def test_export_and_reopen(opened, tmp_path, monkeypatch):
    viewer, widget, labels = opened
    original = labels.data.copy()
    names = dict(labels.metadata["mask_names"])
    a, b, c = largest(original, 3)
    widget.delete([a])
    widget.merge([b, c])
    root = tmp_path / "curated"
    widget._root.value = root
    widget._split.value = "validation"
    result = widget.export()
    assert result is not None and result.path == root / labels.metadata["sample_id"]
    # re-open the export with the reader and compare
    before = len(viewer.layers)
    viewer.open(str(result.path), plugin="napari-nucleiseg")
    reopened = viewer.layers[-1]
    assert len(viewer.layers) == before + 2 and isinstance(reopened, Labels)
    assert compare_labels(reopened.data, labels.data).total == 0
    assert np.array_equal(viewer.layers[-2].data, viewer.layers[0].data)
    kept = {names[i] for i in np.unique(original)[1:] if i not in (a, b, c)}
    assert kept <= set(reopened.metadata["mask_names"].values())
    entry = read_manifest(root)[result.id]
    assert (entry["removed"], entry["changed"], entry["split"]) == (2, 1, "validation")
    assert entry["source"] == str(sample_folder("fluorescence"))
    # the source is untouched
    assert read_sample(sample_folder("fluorescence")).mask_names == names


def test_export_existing_id_asks(opened, tmp_path, monkeypatch):
    viewer, widget, labels = opened
    widget._root.value = tmp_path
    assert widget.export() is not None
    asked = []

    def cancel(root, sample_id, proposed):
        asked.append(proposed)
        return None

    monkeypatch.setattr(ExportPanel, "ask_existing", lambda self, *a: cancel(*a))
    before = tree_digest(tmp_path)
    widget.delete([largest(labels.data, 1)[0]])
    assert widget.export() is None
    assert asked == [f"{labels.metadata['sample_id']}_v2"]
    assert tree_digest(tmp_path) == before  # a refused export changes nothing
    monkeypatch.setattr(ExportPanel, "ask_existing", lambda *args: "new-version")
    result = widget.export()
    assert result.id == asked[0] and result.path.is_dir()
    monkeypatch.setattr(ExportPanel, "ask_existing", lambda *args: "overwrite")
    result = widget.export()
    assert result.id == labels.metadata["sample_id"]
    assert read_sample(result.path).labels.max() == len(np.unique(labels.data)) - 1


def test_export_errors_are_reported(opened, tmp_path):
    viewer, widget, labels = opened
    assert widget.export() is None  # no root chosen
    assert "output root" in widget._status.value
    blocker = tmp_path / "file"
    blocker.write_text("x")
    widget._root.value = blocker
    assert widget.export() is None
    assert "/file: is not a folder" in widget._status.value  # a long path is cut in the middle
    assert str(blocker) in widget._status.tooltip


def test_save_tiff(opened, tmp_path):
    viewer, widget, labels = opened
    widget._tiff.value = tmp_path / "labels.tif"
    path = widget.save_tiff()
    from napari_nucleiseg.io import read_label_image

    assert np.array_equal(read_label_image(path), labels.data)


def test_keys_unbound_when_widget_removed(opened):
    viewer, widget, labels = opened
    labels.bind_key("D", None, overwrite=True)  # we restore what was there: nothing
    widget._saved_keys["D"] = None
    viewer.window.remove_dock_widget(widget.native)
    assert widget.layer is None
    assert not set(KEYS) & {str(k) for k in labels.keymap}


def test_keys_follow_the_chosen_layer(opened):
    viewer, widget, labels = opened
    other = viewer.add_labels(np.zeros((8, 8), np.uint16), name="other")
    widget.reset_choices()
    widget._layer_combo.value = other
    assert widget.layer is other
    assert set(KEYS) <= {str(k) for k in other.keymap}
    assert not set(KEYS) & {str(k) for k in labels.keymap}
    viewer.layers.remove(other)
    assert widget.layer is not other


def test_shortcuts_act_on_the_nucleus_under_the_pointer(opened):
    from napari.utils.key_bindings import coerce_keybinding

    viewer, widget, labels = opened
    original = labels.data.copy()
    a, b = largest(original, 2)
    press = {k: labels.keymap[coerce_keybinding(k)] for k in KEYS}
    viewer.cursor.position = inside(original, a)
    press["D"](labels)
    assert not np.any(labels.data == a)
    viewer.cursor.position = inside(original, b)
    press["N"](labels)
    assert labels.selected_label == int(original.max()) + 1
    labels.undo()
    assert np.array_equal(labels.data, original)


def test_opens_from_the_plugin_menu(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open(str(sample_folder("histology")), plugin="napari-nucleiseg")
    _, widget = viewer.window.add_plugin_dock_widget("napari-nucleiseg", "Correct masks")
    assert isinstance(widget, CorrectWidget)
    assert widget.layer is viewer.layers[-1]
    assert widget._sample_id.value == viewer.layers[-1].metadata["sample_id"]
