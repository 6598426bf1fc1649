"""The "Correct masks" widget: fix a Labels layer, count the changes, export a training sample.

Glue only: every operation is a function of :mod:`napari_nucleiseg.edit`; the export is
:class:`~napari_nucleiseg._napari.export_panel.ExportPanel`, below the tools. An
operation's result is written back with ``Labels.data_setitem`` inside
``Labels.block_history()``, both public napari API, so that napari's own undo
(Ctrl+Z on the layer) takes it back in one step, like a paint stroke.

Keys, bound on the chosen Labels layer while the widget is open (the pointer
picks the nucleus): D delete, G merge (press over two nuclei), S split (press
over two points of one nucleus), H fill holes, N paint a new nucleus.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import napari
import numpy as np
from magicgui.widgets import Container, Label, LineEdit, SpinBox, create_widget
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer

from .. import edit
from ..edit import compare_labels
from . import _metadata as meta
from ._layers import narrow, rows, scroll, section, show_line, text_lines
from ._lifetime import CloseWatcher
from .export_panel import ExportPanel, button, source_labels

SPLIT_LINE_LAYER = "split line"
KEYS = {"D": "delete", "G": "merge", "S": "split", "H": "fill_holes", "N": "new_label"}


def _parse_ids(text: str) -> list[int]:
    return [int(t) for t in re.findall(r"\d+", text or "")]


class CorrectWidget(Container):
    """Correction tools, a change count and the export of a Labels layer."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=False)
        self._viewer = viewer
        self._layer: napari.layers.Labels | None = None
        self._saved_keys: dict[str, object] = {}
        self._picks: dict[str, list] = {"merge": [], "split": []}
        self._build()
        self._timer = QTimer(self.native)
        self._timer.setSingleShot(True)
        self._timer.setInterval(150)
        self._timer.timeout.connect(self.update_count)
        self._watcher = CloseWatcher(self.disconnect_layer)
        self.native.installEventFilter(self._watcher)
        self.native.destroyed.connect(self._on_destroyed)
        viewer.layers.events.removed.connect(self._on_layer_removed)
        self._layer_combo.changed.connect(self._on_layer_changed)
        self.reset_choices()
        self._on_layer_changed(self._layer_combo.value)

    # ------------------------------------------------------------ building
    def _row(self, *widgets) -> Container:
        row = Container(widgets=list(widgets), layout="horizontal", labels=False)
        row.margins = (0, 0, 0, 0)
        return row

    def _build(self) -> None:
        self._layer_combo = create_widget(annotation=napari.layers.Labels, label="Labels")
        self._ids = LineEdit(
            label="Nuclei", tooltip="Label ids to act on, e.g. '12 15'; empty: the selected label"
        )
        self._ids.native.setPlaceholderText("e.g. 12 15 (empty: the selected label)")
        self._min_size = SpinBox(
            value=30, min=0, max=1_000_000, label="Min. size", tooltip="pixels"
        )
        self._picks_label = _text("")
        self._count = _text("")
        self._status = _text("")
        self._export = ExportPanel(
            layer=lambda: self._layer,
            label_array=self._label_array,
            say=self._say,
            note=lambda message: setattr(self._status, "value", message),
        )
        narrow(self._layer_combo)
        b = button
        correct = section(
            "Correct (keys D G S H N, Ctrl+Z undoes)",
            [
                self._ids,
                self._row(
                    b(
                        "Delete [D]",
                        self.delete,
                        "Delete the listed nuclei (or the selected label)",
                    ),
                    b("Merge [G]", self.merge, "Merge the listed nuclei, or two picked with G"),
                ),
                self._row(
                    b("Split at seeds [S]", self.split, "Press S over two points of one nucleus"),
                    b("Split along line", self.split_along_line, "Draw a path across a nucleus"),
                ),
                self._row(
                    b("Fill holes [H]", self.fill_holes, "Of the listed nuclei, or all"),
                    b("New label [N]", self.new_label, "Paint a new nucleus"),
                ),
                self._min_size,
                self._row(
                    b("Remove smaller", self.remove_small), b("Renumber 1..N", self.renumber)
                ),
                self._row(self._picks_label, b("Clear picks", self.clear_picks)),
                self._count,
            ],
        )
        self.extend([rows(self._layer_combo), correct, self._export, self._status])
        self.native.setMaximumWidth(480)
        scroll(self)

    # ------------------------------------------------------------ layer
    @property
    def layer(self) -> napari.layers.Labels | None:
        """The Labels layer being corrected."""
        return self._layer

    def _on_layer_changed(self, layer) -> None:
        if layer is self._layer:
            return
        self.disconnect_layer()
        self._layer = layer
        if layer is None:
            return
        self._ensure_baseline(layer)
        for key, name in KEYS.items():
            self._saved_keys[key] = layer.bind_key(key, self._key_handler(name), overwrite=True)
        layer.events.paint.connect(self._schedule_count)
        layer.events.set_data.connect(self._schedule_count)
        layer.events.data.connect(self._on_data_replaced)
        self._export.update_default_id()
        self.update_count()

    def disconnect_layer(self) -> None:
        """Unbind our keys (restoring what they did before) and stop listening to the layer."""
        layer, self._layer = self._layer, None
        if layer is None:
            return
        for key, previous in self._saved_keys.items():
            layer.bind_key(key, previous if callable(previous) else None, overwrite=True)
        self._saved_keys = {}
        for emitter, slot in (
            (layer.events.paint, self._schedule_count),
            (layer.events.set_data, self._schedule_count),
            (layer.events.data, self._on_data_replaced),
        ):
            emitter.disconnect(slot)
        if self._timer is not None:
            self._timer.stop()
        self._picks = {"merge": [], "split": []}

    def _on_destroyed(self, *_) -> None:
        self._timer = None
        self.disconnect_layer()
        self._viewer.layers.events.removed.disconnect(self._on_layer_removed)

    def _on_layer_removed(self, event) -> None:
        if event.value is self._layer:
            self.disconnect_layer()

    def _ensure_baseline(self, layer) -> None:
        """The labels the count starts from: as segmented, as read from disk, or as first seen."""
        data = np.asarray(layer.data)
        baseline = layer.metadata.get(meta.BASELINE)
        if isinstance(baseline, np.ndarray) and baseline.shape == data.shape:
            return
        original = source_labels(layer)
        if original is None or original.shape != data.shape:
            original = data.copy()
        layer.metadata[meta.BASELINE] = original

    def _on_data_replaced(self, event=None) -> None:
        """A new segmentation replaced the layer's data: count from it."""
        if self._layer is not None:
            self._layer.metadata[meta.BASELINE] = np.array(self._layer.data, copy=True)
            self._schedule_count()

    def _label_array(self) -> np.ndarray:
        """The layer's 2-D label array; raises ValueError when there is none to edit."""
        if self._layer is None:
            raise ValueError("choose a Labels layer first")
        data = self._layer.data
        if not isinstance(data, np.ndarray) or data.ndim != 2:
            raise ValueError(
                "the tools work on one 2-D sample; open a sample folder, not a whole root"
            )
        return data

    # ------------------------------------------------------------ counting
    def _schedule_count(self, event=None) -> None:
        if self._timer is not None:
            self._timer.start()

    def update_count(self) -> None:
        """Show the nuclei added, removed and changed since the layer was segmented or loaded."""
        changes = self.changes()
        if changes is None:
            self._count.value = ""
            return
        self._count.value = (
            f"Since loaded: {changes.added} added, {changes.removed} removed, "
            f"{changes.changed} changed ({changes.unchanged} untouched)"
        )

    def changes(self):
        """:class:`~napari_nucleiseg.edit.LabelChanges` against the baseline, or None."""
        if self._layer is None:
            return None
        try:
            labels = self._label_array()
        except ValueError:
            return None
        return compare_labels(labels, self._layer.metadata.get(meta.BASELINE))

    # ------------------------------------------------------------ applying
    def _say(self, message: str, error: bool = False) -> None:
        show_line(self._status, message)
        (show_error if error else show_info)(message)

    def apply(self, operation: Callable[[np.ndarray], np.ndarray], what: str) -> bool:
        """Run ``operation`` on the labels and write the difference as one undoable step."""
        try:
            labels = self._label_array()
            new = operation(labels)
        except ValueError as exc:
            self._say(f"{what}: {exc}", error=True)
            return False
        changed = np.nonzero(labels != new)
        if changed[0].size == 0:
            self._status.value = f"{what}: nothing to change"
            return False
        with self._layer.block_history():
            self._layer.data_setitem(changed, new[changed])
        self._status.value = f"{what}: {changed[0].size} pixel(s) changed (Ctrl+Z undoes)"
        self.update_count()
        return True

    def _chosen_ids(self) -> list[int]:
        ids = _parse_ids(self._ids.value)
        if not ids and self._layer is not None and self._layer.selected_label:
            ids = [int(self._layer.selected_label)]
        return ids

    def delete(self, ids: list[int] | None = None) -> bool:
        """Delete the given nuclei (default: the Nuclei field, else the selected label)."""
        ids = ids or self._chosen_ids()
        return self.apply(lambda a: edit.delete_labels(a, ids), "delete")

    def merge(self, ids: list[int] | None = None) -> bool:
        """Merge the given nuclei (default: the two picked with G, else the Nuclei field)."""
        ids = ids or self._picks["merge"] or _parse_ids(self._ids.value)
        done = self.apply(lambda a: edit.merge_labels(a, ids), "merge")
        self.clear_picks()
        return done

    def split(self, seeds: list | None = None) -> bool:
        """Split one nucleus at two seed points (default: the two picked with S)."""
        seeds = seeds or self._picks["split"]
        if len(seeds) != 2:
            self._say("split: press S over two points of the nucleus to split", error=True)
            return False
        done = self.apply(lambda a: edit.split_label(a, seeds), "split")
        self.clear_picks()
        return done

    def split_along_line(self, line: np.ndarray | None = None) -> bool:
        """Split the nucleus that the last path of the "split line" Shapes layer crosses."""
        if self._layer is None:
            self._say("split: choose a Labels layer first", error=True)
            return False
        if line is None:
            shapes = self._split_line_layer()
            if not len(shapes.data):
                self._say("split: draw a path across the nucleus, then press the button again")
                return False
            line = [self._layer.world_to_data(shapes.data_to_world(v)) for v in shapes.data[-1]]
            shapes.data = []
        points = np.asarray(line, dtype=float)[:, -2:]
        done = self.apply(lambda a: edit.split_label_along_line(a, points), "split along line")
        if self._layer is not None:
            self._viewer.layers.selection.active = self._layer
        return done

    def _split_line_layer(self):
        if SPLIT_LINE_LAYER in self._viewer.layers:
            return self._viewer.layers[SPLIT_LINE_LAYER]
        layer = self._viewer.add_shapes(
            name=SPLIT_LINE_LAYER, edge_color="yellow", edge_width=1, ndim=2
        )
        layer.mode = "add_path"
        return layer

    def fill_holes(self, ids: list[int] | None = None) -> bool:
        """Fill the holes of the given nuclei (default: the Nuclei field, else all)."""
        ids = ids or _parse_ids(self._ids.value) or None
        return self.apply(lambda a: edit.fill_holes(a, ids), "fill holes")

    def remove_small(self, min_size: int | None = None) -> bool:
        """Delete the nuclei smaller than ``min_size`` pixels (default: the spin box)."""
        size = self._min_size.value if min_size is None else min_size
        return self.apply(lambda a: edit.remove_small(a, size), f"remove < {size} px")

    def renumber(self) -> bool:
        """Renumber the labels 1..N."""
        return self.apply(lambda a: edit.renumber(a)[0], "renumber")

    def new_label(self) -> int | None:
        """Select the next free label and the paint brush, to paint a new nucleus."""
        try:
            label = edit.next_free_label(self._label_array())
        except ValueError as exc:
            self._say(f"new label: {exc}", error=True)
            return None
        self._layer.selected_label = label
        self._layer.mode = "paint"
        self._status.value = f"painting new nucleus {label}"
        return label

    # ------------------------------------------------------------ keys and picks
    def _cursor_point(self) -> tuple[float, float]:
        data = self._layer.world_to_data(self._viewer.cursor.position)
        return tuple(float(v) for v in data[-2:])

    def _key_handler(self, name: str) -> Callable:
        def handler(layer):
            self.key_action(name, self._cursor_point())

        handler.__doc__ = f"nucleiseg: {name.replace('_', ' ')} at the pointer"
        return handler

    def key_action(self, name: str, point: tuple[float, float]) -> None:
        """What a shortcut does with the nucleus under ``point`` (row, col in data pixels)."""
        try:
            label = edit.label_at(self._label_array(), point)
        except ValueError as exc:
            self._say(str(exc), error=True)
            return
        if name == "new_label":
            self.new_label()
        elif name == "delete":
            if label:
                self.delete([label])
        elif name == "fill_holes":
            self.fill_holes([label] if label else None)
        elif name == "merge":
            self._pick("merge", label, label)
        elif name == "split":
            self._pick("split", label, point)

    def _pick(self, kind: str, label: int, value) -> None:
        if not label:
            self.clear_picks()
            self._status.value = f"{kind}: no nucleus under the pointer; picks cleared"
            return
        picks = self._picks[kind]
        if value not in picks:
            picks.append(value)
        self._picks_label.value = f"{kind} picks: {', '.join(map(_fmt, picks))}"
        if len(picks) == 2:
            self.merge() if kind == "merge" else self.split()

    def clear_picks(self) -> None:
        """Forget the nuclei picked with G and the seeds picked with S."""
        self._picks = {"merge": [], "split": []}
        self._picks_label.value = ""

    # ------------------------------------------------------------ export (the panel's)
    _image_combo = property(lambda self: self._export.image_combo)
    _root = property(lambda self: self._export.root)
    _sample_id = property(lambda self: self._export.sample_id)
    _split = property(lambda self: self._export.split)
    _tiff = property(lambda self: self._export.tiff)

    def export(self):
        """Export the image and the labels as a stage-1 sample; returns the ExportResult or None."""
        return self._export.export()

    def save_tiff(self) -> Path | None:
        """Save the labels as one TIFF (the path in the "Labels TIFF" field)."""
        return self._export.save_tiff()

    def export_tiff_layout(self):
        """Convert the output root to ``<root>_tiff/images`` + ``masks`` in a worker thread."""
        return self._export.export_tiff_layout()


def _fmt(value) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(f"{v:.0f}" for v in value) + ")"
    return str(value)


def _text(value: str) -> Label:
    """A left-aligned line of text that wraps (status, picks: they may hold a long path)
    and never widens the dock."""
    label = Label(value=value)
    text_lines(label)
    return label
