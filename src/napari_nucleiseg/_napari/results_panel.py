"""The "Measurements and outputs" section of the Segment dock: the result measured as its Labels
layer's ``features``, napari's features table following the cursor, the table as CSV, and the
labels in the files other tools open.

Glue only: the figures are :func:`napari_nucleiseg.measure.measure`, the files
:func:`napari_nucleiseg.io.formats.write_outputs`. The dock measures in the worker that makes
the labels (:func:`measured`) and hands the panel each Labels layer it shows with that
measurement; the panel owns what it puts on the layer (features, a mouse callback, edit
listeners) and takes it off when the layer or the dock goes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from magicgui.widgets import CheckBox, Container, Label
from napari.layers import Image, Labels, Layer
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from superqt.utils import FunctionWorker

from .. import measure as measure_
from ..errors import NucleisegError, one_line
from ..io.atomic import same_file
from ..io.formats import FORMATS, output_paths, parse_formats, write_outputs
from ..io.inputs import strip_ome
from ..io.metadata import pixel_size_of
from . import _layers
from . import _metadata as meta
from .export_panel import button

FEATURES_TABLE = ("napari", "Features table widget")  #: napari's own dock (napari_builtins)
FORMAT_NAMES = {
    "tiff": "TIFF",
    "roi": "ImageJ ROIs",
    "geojson": "QuPath GeoJSON",
    "ome-tiff": "OME-TIFF",
    "ome-zarr": "OME-Zarr",
}
DEFAULT_FORMATS = ("tiff", "roi", "geojson")


def format_boxes(chosen: tuple[str, ...] = DEFAULT_FORMATS) -> dict[str, CheckBox]:
    """One checkbox per output format (:mod:`napari_nucleiseg.io.formats`), ticked for
    ``chosen``."""
    return {
        f: CheckBox(text=FORMAT_NAMES[f], value=f in chosen, label="", tooltip=f"--format {f}")
        for f in FORMATS
    }


def format_rows(boxes: dict[str, CheckBox]) -> list[Container]:
    """The format checkboxes on two rows of a section, the first labelled "Formats"."""
    ticks = list(boxes.values())
    return [_across(*ticks[:3], label="Formats"), _across(*ticks[3:])]


def chosen_formats(boxes: dict[str, CheckBox]) -> tuple[str, ...]:
    """The formats whose box is ticked."""
    return tuple(f for f, box in boxes.items() if box.value)


STALE = "The labels changed since they were measured: press Measure"
T = TypeVar("T")


def pixel_size_um(layer: Layer) -> tuple[float, float] | None:
    """The (y, x) pixel size of a layer in µm (see :func:`_scale_rule`); reads the file."""
    size, source = _scale_rule(layer)
    return size or _file_pixel_size(source)


def _scale_rule(layer: Layer) -> tuple[tuple[float, float] | None, str | None]:
    """(the pixel size in µm from the scale and units of the last two axes, or None; the
    file whose recorded pixel size to take instead, or None).

    A length unit (napari >= 0.6 has ``units``) converts the scale to µm (nm, mm ...).
    With napari's default unit, the pixel, a scale other than 1 is taken as µm: users set
    the scale in µm, as most readers do. Scale 1 in pixels is the pixel size the layer's
    file records (an OME-TIFF or ImageJ TIFF opened by napari's own reader), if any;
    else, or with another kind of unit, there is no pixel size: measurements in pixels.
    """
    scale = [float(s) for s in layer.scale[-2:]]
    units = list(getattr(layer, "units", None) or ["pixel", "pixel"])[-2:]
    if all(_is_length(u) for u in units):
        return (_to_um(scale[0], units[0]), _to_um(scale[1], units[1])), None
    if all(str(u) == "pixel" for u in units):
        if any(s != 1 for s in scale):
            return (scale[0], scale[1]), None
        return None, meta.source_of(layer)
    return None, None


def _file_pixel_size(source: str | None) -> tuple[float, float] | None:
    if not source or not Path(source).is_file():
        return None
    try:
        return pixel_size_of(source)
    except NucleisegError:  # a file that cannot be read again: no pixel size
        return None


def _is_length(unit) -> bool:
    return str(getattr(unit, "dimensionality", "")) == "[length]"


def _to_um(value: float, unit) -> float:
    return float((value * unit).to("micrometer").magnitude)


@dataclass(frozen=True)
class Measurement:
    """The table of a 2-D result (one row per nucleus), or None with the reason in ``note``."""

    table: measure_.Table | None
    note: str

    def features(self) -> dict[str, np.ndarray]:
        """The table as a Labels layer's ``features`` (row ``i`` holds label ``i``)."""
        return {} if self.table is None else measure_.features(self.table)


@dataclass(frozen=True)
class Measuring:
    """What measuring labels needs, read from the layers on the GUI thread; called in a worker.

    ``image`` is the image layer's data (None: no intensities); ``planes`` the number of
    planes of the layer: measurements are per 2-D image, so a stack is not measured.
    """

    image: object | None
    pixel_size: tuple[float, float] | None
    planes: int = 1
    source: str | None = None  #: a file whose pixel size to read (in the worker)

    @classmethod
    def of(cls, image: Image | None, labels: Labels | None = None) -> Measuring:
        """From the image layer, or without one from the Labels layer (no intensities)."""
        if image is not None:
            lead = _layers.image_lead(image)
            size, source = _scale_rule(image)  # the file, if any, is read in the worker
            return cls(_layers.image_data(image), size, int(np.prod(lead)), source)
        planes = int(np.prod(labels.data.shape[:-2])) if labels is not None else 1
        if labels is None:
            return cls(None, None, planes)
        size, source = _scale_rule(labels)
        return cls(None, size, planes, source)

    def __call__(self, labels: np.ndarray) -> Measurement:
        """Measure ``labels``, (H, W) or (1, H, W) ndarray of int."""
        if self.planes != 1:
            return Measurement(
                None, f"Not measured: measurements are per 2-D image, this is {self.planes} planes"
            )
        labels = np.asarray(labels)
        labels = labels.reshape(labels.shape[-2:])
        image = None if self.image is None else np.asarray(self.image)
        size = self.pixel_size or _file_pixel_size(self.source)
        try:
            table = measure_.measure(labels, image, size)
        except ValueError as exc:  # pixels that are not square, an image of another shape
            return Measurement(None, f"Not measured: {exc}")
        n = len(table["label"])
        noun = "nucleus" if n == 1 else "nuclei"
        return Measurement(table, f"{n} {noun} measured, in {measure_.unit_name(size)}")


def measured(
    job: Generator[object, None, T | None],
    measuring: Measuring,
    labels_of: Callable[[T], np.ndarray] = lambda out: out,
) -> Generator[object, None, tuple[T, Measurement] | None]:
    """A worker generator: ``job``'s steps and result, then the result's labels measured in
    the same thread; None when ``job`` returns None (cancelled)."""
    out = yield from job
    if out is None:
        return None
    return out, measuring(labels_of(out))


def save_files(paths: dict[str, Path], labels: np.ndarray, measuring: Measuring) -> dict:
    """The worker of "Save outputs": measure, then write each format; returns ``paths``."""
    try:
        image = None if measuring.image is None else np.asarray(measuring.image)
        write_outputs(
            paths, labels, image=image, pixel_size=measuring.pixel_size,
            table=measuring(labels).table,
        )  # fmt: skip
    except Exception as exc:  # a worker drops a RuntimeError silently: re-raise as ours
        raise NucleisegError(f"Saving outputs failed: {one_line(exc)}") from exc
    return paths


def file_stem(text: str) -> str:
    """``text`` as a file name: runs of other characters than letters, digits and ``_.+-``
    become one ``_``."""
    stem = re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_") or "nuclei"
    return strip_ome(stem)  # napari names a layer of x.ome.tif "x.ome": the outputs say x


class ResultsPanel(Container):
    """Measure the Segment dock's Labels layer, show the table, save it and the outputs.

    The dock calls :meth:`show` with each Labels layer it puts up and :meth:`close` when it
    closes; the panel keeps the layer's features up to date or says they are stale.
    """

    def __init__(self, viewer):
        super().__init__(labels=False)
        self.margins = (0, 0, 0, 0)
        self._viewer = viewer
        self._layer: Labels | None = None
        self._image: Image | None = None
        self._table: measure_.Table | None = None
        self._edits = self._measured_at = 0  # edits of the layer, and at the last measurement
        self._job = None  # only the latest measurement is applied
        self._table_widget = None  # napari's features table, once "Show table" opened it
        self._brush_label: int | None = None  # the paint label before Follow cursor moved it
        self.measure_button = button(
            "Measure", self.measure, "Measure the nuclei of the labels as they are now"
        )
        self.table_button = button(
            "Show table", self.show_table, "Open napari's features table on the labels"
        )
        self.save_table_button = button(
            "Save table…", self.save_table, "Save the measurements as CSV, one row per nucleus"
        )
        self.follow = CheckBox(text="Follow cursor", value=True, label="")
        self.follow.tooltip = (
            "With the labels layer selected in pan/zoom mode, the nucleus under the mouse "
            "becomes the selected label, and its row is highlighted in the features table"
        )
        self.formats = format_boxes()
        self.save_outputs_button = button(
            "Save outputs…", self.save_outputs,
            "Write the labels in the ticked formats to a folder, named by the sample id",
        )  # fmt: skip
        self.status = Label(label="")
        _layers.text_lines(self.status)
        self.extend([
            _layers.section("Measurements and outputs", [
                _across(self.measure_button, self.table_button, self.save_table_button),
                self.follow,
                *format_rows(self.formats),
                self.save_outputs_button, self.status,
            ]),
        ])  # fmt: skip
        viewer.layers.events.removed.connect(self._on_removed)
        self._update_buttons()

    # ---- the layer ----------------------------------------------------------------------
    def show(self, layer: Labels, image: Image | None, measurement: Measurement) -> None:
        """Take ``layer`` (labels segmented from ``image``) and its measurement."""
        layer = getattr(layer, "__wrapped__", layer)  # napari's proxy of a plugin's viewer
        if layer is not self._layer:
            self._detach()
            self._layer = layer
            layer.mouse_move_callbacks.append(self._follow_cursor)
            layer.events.paint.connect(self._on_edit)
            layer.events.data.connect(self._on_edit)
            layer.events.mode.connect(self._on_mode)
            self._brush_label = None
        self._image = getattr(image, "__wrapped__", image)
        self._job = None  # a Measure still running measures labels these replace
        self._apply(measurement, self._edits)

    def close(self) -> None:
        """Take the panel's callbacks off the layer and the viewer (the dock is closing)."""
        self._detach()
        self._viewer.layers.events.removed.disconnect(self._on_removed)

    def _detach(self) -> None:
        layer, self._layer, self._table, self._job = self._layer, None, None, None
        if layer is not None:
            if self._follow_cursor in layer.mouse_move_callbacks:
                layer.mouse_move_callbacks.remove(self._follow_cursor)
            layer.events.paint.disconnect(self._on_edit)
            layer.events.data.disconnect(self._on_edit)
            layer.events.mode.disconnect(self._on_mode)
        self._update_buttons()

    def _on_removed(self, event=None) -> None:
        layers = self._viewer.layers
        if self._layer is not None and self._layer not in layers:
            self._detach()
            self.status.value = ""
        if self._image is not None and self._image not in layers:
            self._image = None

    def _on_edit(self, event=None) -> None:
        self._edits += 1
        self.status.value = STALE

    @property
    def stale(self) -> bool:
        """Whether the labels changed since the features were measured."""
        return self._layer is not None and self._edits != self._measured_at

    def _apply(self, measurement: Measurement, edits: int) -> None:
        """Put a measurement made at ``edits`` on the layer (GUI thread)."""
        self._layer.features = measurement.features()
        self._table, self._measured_at = measurement.table, edits
        _layers.show_line(self.status, measurement.note)
        if self.stale:
            self.status.value = STALE
        self._update_buttons()

    def _update_buttons(self) -> None:
        some = self._layer is not None
        self.measure_button.enabled = self.table_button.enabled = some
        plane = some and self._layer.ndim == 2  # a table and outlines are per 2-D image
        self.save_table_button.enabled = self.save_outputs_button.enabled = plane

    # ---- measuring ----------------------------------------------------------------------
    def _measuring(self) -> Measuring:
        return Measuring.of(self._image, self._layer)

    def measure(self, then: Callable[[], object] | None = None):
        """Measure the labels as they are now, in a worker; ``then()`` runs once the features
        are on the layer. Returns the worker (None without labels)."""
        layer, edits = self._layer, self._edits
        if layer is None:
            return None
        labels = np.array(layer.data, copy=True)  # painting may go on while the worker runs
        self._job = job = object()
        self.status.value = "Measuring…"

        def done(measurement: Measurement) -> None:
            if self._layer is layer and self._job is job:
                self._apply(measurement, edits)
                if then is not None:
                    then()

        return create_worker(
            self._measuring(), labels, _worker_class=FunctionWorker,
            _connect={"returned": done, "errored": self._failed},
        )  # fmt: skip

    def _failed(self, exc: Exception) -> None:
        if self._layer is not None:  # (else the dock may be gone)
            _layers.show_line(self.status, one_line(exc))
        show_error(one_line(exc))

    # ---- the table ----------------------------------------------------------------------
    def show_table(self) -> None:
        """Open napari's features table dock on the labels."""
        if self._layer is None:
            return
        _, self._table_widget = self._viewer.window.add_plugin_dock_widget(*FEATURES_TABLE)
        self._viewer.layers.selection.active = self._layer

    def _follow_cursor(self, layer: Labels, event) -> None:
        """A mouse-move callback: the nucleus under the cursor becomes the selected label."""
        if not self.follow.value or layer.mode != "pan_zoom":
            return
        value = layer.get_value(
            event.position, view_direction=getattr(event, "view_direction", None),
            dims_displayed=getattr(event, "dims_displayed", None), world=True,
        )  # fmt: skip
        value = value[1] if layer.multiscale and value is not None else value
        if value and int(value) != layer.selected_label:
            if self._brush_label is None:
                self._brush_label = layer.selected_label  # given back when pan/zoom ends
            layer.selected_label = int(value)  # napari's table selects the label's row
            self._reveal_row()

    def _on_mode(self, event=None) -> None:
        """Leaving pan/zoom, the brush gets back the label it had before the cursor moved."""
        layer = self._layer
        if layer is not None and layer.mode != "pan_zoom" and self._brush_label is not None:
            layer.selected_label, self._brush_label = self._brush_label, None

    def _reveal_row(self) -> None:
        """Scroll the features table that "Show table" opened to its selected row."""
        view = getattr(self._table_widget, "table", None)  # napari_builtins' QTableView
        try:
            rows = view.selectionModel().selectedRows() if view is not None else []
            if rows:
                view.scrollTo(rows[0])
        except RuntimeError:  # its dock was closed: the Qt side is gone
            self._table_widget = None

    def output_name(self) -> str:
        """The stem of the files saved: the sample id, else the image layer's name."""
        layer = self._layer
        sample = layer.metadata.get(meta.SAMPLE_ID) if layer is not None else None
        if sample:
            return file_stem(str(sample))
        if self._image is not None:
            return file_stem(self._image.name)
        return file_stem(layer.name if layer is not None else "nuclei")

    def save_table(self) -> Path | None:
        """Ask for a CSV file and save the table there (measured again if the labels changed)."""
        if self._layer is None:
            return None
        path = self.ask_table_path(f"{self.output_name()}_measurements.csv")
        if not path:
            return None
        path = Path(path)
        if path.suffix.lower() != ".csv":
            path = path.with_name(f"{path.name}.csv")
            if path.exists() and not self.ask_replace([path]):  # the dialog asked of another name
                return None
        if self.stale or self._table is None:
            self.measure(then=lambda: self._write_table(path))
        else:
            self._write_table(path)
        return path

    def _write_table(self, path: Path) -> None:
        if self._table is None:
            show_warning(f"Nothing saved: {self.status.value}")
            return
        try:
            measure_.write_table(path, self._table)
        except (OSError, NucleisegError) as exc:
            self._failed(exc)
            return
        n = len(self._table["label"])
        _layers.show_line(self.status, f"Saved {n} rows to {path}")
        show_info(f"Saved the measurements of {n} nuclei to {path}")

    # ---- the outputs --------------------------------------------------------------------
    def save_outputs(self):
        """Ask for a folder and write the labels there in the ticked formats, in a worker;
        an existing file is replaced only if the user says so. Returns the worker or None."""
        layer = self._layer
        if layer is None:
            return None
        try:
            formats = parse_formats(chosen_formats(self.formats))
        except NucleisegError as exc:
            self._failed(exc)
            return None
        folder = self.ask_folder()
        if not folder:
            return None
        paths = output_paths(folder, self.output_name(), formats)
        source = meta.source_of(self._image) if self._image is not None else None
        clash = [p for p in paths.values() if p.exists()]
        if source and any(same_file(p, source) for p in clash):
            show_warning(f"Nothing written: {source} is the image's own file")
            return None
        if clash and not self.ask_replace(clash):
            show_warning(f"Nothing written: {clash[0]} exists")
            return None
        labels = np.array(layer.data, copy=True)
        self.status.value = f"Saving {len(paths)} files…"

        def done(written: dict) -> None:
            if self._layer is layer:  # (else the dock or the layer went meanwhile)
                _layers.show_line(
                    self.status, f"Saved {', '.join(p.name for p in written.values())}"
                )
            show_info(f"Saved the nuclei to {folder}: {', '.join(formats)}")

        return create_worker(
            save_files, paths, labels, self._measuring(), _worker_class=FunctionWorker,
            _connect={"returned": done, "errored": self._failed},
        )  # fmt: skip

    # ---- dialogs (tests replace them) ---------------------------------------------------
    def ask_table_path(self, name: str) -> str:
        """Ask where to save the CSV ("" when cancelled)."""
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getSaveFileName(
            self.native, "Save measurements", name, "CSV files (*.csv)"
        )
        return path

    def ask_folder(self) -> str:
        """Ask for the folder of the outputs ("" when cancelled)."""
        from qtpy.QtWidgets import QFileDialog

        return QFileDialog.getExistingDirectory(self.native, "Save outputs to folder")

    def ask_replace(self, paths: list[Path]) -> bool:
        """Ask whether to replace existing files."""
        from qtpy.QtWidgets import QMessageBox

        names = "\n".join(str(p) for p in paths)
        answer = QMessageBox.question(self.native, "Replace?", f"These exist:\n{names}\nReplace?")
        return answer == QMessageBox.StandardButton.Yes


def _across(*widgets, label: str = "") -> Container:
    """Widgets side by side on one row of a section."""
    box = Container(widgets=list(widgets), layout="horizontal", labels=False, label=label)
    box.margins = (0, 0, 0, 0)
    return box
