"""The export part of the "Correct masks" dock: a Labels layer as a training sample, a root
as a TIFF layout, the labels as one TIFF.

Glue only: the export is :func:`napari_nucleiseg.io.export.export_sample`. The panel knows
the dock only through what it is given: the Labels layer, its 2-D label array and the
status line.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from pathlib import Path

import napari
import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, LineEdit, PushButton, create_widget

from ..errors import FileProblem
from ..io import stage1
from ..io.export import SampleExists, export_sample, next_version_id
from ..io.images import write_label_tiff
from ..io.manifest import SPLITS
from ..io.tiff_layout import iter_export_tiff_layout
from . import _metadata as meta
from ._layers import narrow, section


def button(text: str, slot: Callable[[], object], tooltip: str = "") -> PushButton:
    """A push button that calls ``slot()``."""
    widget = PushButton(text=text, tooltip=tooltip)
    widget.changed.connect(lambda *_: slot())
    return widget


def source_labels(layer) -> np.ndarray | None:
    """The labels as stored in the layer's source sample folder, if it has one."""
    source = layer.metadata.get(meta.SOURCE)
    if not source or meta.MASK_NAMES not in layer.metadata:
        return None
    if not stage1.is_sample_folder(source):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", stage1.OverlapWarning)  # the reader warned once
            labels, _, _ = stage1.read_labels(source, np.shape(layer.data))
    except FileProblem:
        return None
    return labels


class ExportPanel(Container):
    """The "Export as training data" and "Other outputs" sections of the Correct dock.

    ``layer()`` gives the Labels layer (or None); ``label_array()`` its 2-D labels, raising
    ValueError when there are none; ``say(message, error)`` reports on the status line and
    as a notification; ``note(message)`` only on the status line.
    """

    def __init__(
        self,
        layer: Callable[[], napari.layers.Labels | None],
        label_array: Callable[[], np.ndarray],
        say: Callable[..., None],
        note: Callable[[str], None],
    ):
        super().__init__(labels=False)
        self.margins = (0, 0, 0, 0)
        self._layer, self._label_array, self._say, self._note = layer, label_array, say, note
        self.image_combo = create_widget(annotation=napari.layers.Image, label="Image")
        self.root = FileEdit(mode="d", label="Output root", value="")
        self.sample_id = LineEdit(label="Sample id")
        self.split = ComboBox(choices=list(SPLITS), value="train", label="Use for")
        self.tiff = FileEdit(mode="w", label="Labels TIFF", filter="*.tif", value="")
        narrow(self.image_combo)
        export = section(
            "Export as training data",
            [
                self.image_combo,
                self.root,
                self.sample_id,
                self.split,
                button("Export sample", self.export,
                       "Write the image and labels as a stage-1 sample"),
            ],
        )  # fmt: skip
        other = section(
            "Other outputs",
            [
                button("Root as TIFF layout", self.export_tiff_layout,
                       "Convert the output root to <root>_tiff/images + masks"),
                self.tiff,
                button("Save labels as TIFF", self.save_tiff),
            ],
            expanded=False,
        )  # fmt: skip
        self.extend([export, other])
        self.image_combo.changed.connect(self.update_default_id)

    def update_default_id(self, *_) -> None:
        """Propose the sample id of the labels or the image, else the layer's name."""
        labels = self._layer()
        for layer in (labels, self.image_combo.value):
            if layer is not None and layer.metadata.get(meta.SAMPLE_ID):
                self.sample_id.value = str(layer.metadata[meta.SAMPLE_ID])
                return
        if labels is not None and not self.sample_id.value:
            self.sample_id.value = re.sub(r"[^A-Za-z0-9_.+-]+", "_", labels.name)

    def ask_existing(self, root: Path, sample_id: str, proposed: str) -> str | None:
        """Ask what to do about an existing sample: "overwrite", "new-version" or None."""
        from qtpy.QtWidgets import QMessageBox

        box = QMessageBox(self.native)
        box.setWindowTitle("Sample exists")
        box.setText(f"{root / sample_id} already exists.")
        box.setInformativeText(f"Overwrite it, or save this one as {proposed}?")
        overwrite = box.addButton("Overwrite", QMessageBox.ButtonRole.DestructiveRole)
        version = box.addButton(f"Save as {proposed}", QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(version)
        box.exec()
        clicked = box.clickedButton()
        return {id(overwrite): "overwrite", id(version): "new-version"}.get(id(clicked))

    def export_root(self) -> Path:
        """The output root; raises ValueError when none is chosen."""
        root = str(self.root.value or "")
        if root in ("", "."):
            raise ValueError("choose an output root folder")
        return Path(root)

    def export(self):
        """Export the image and the labels as a stage-1 sample; returns the ExportResult or None."""
        try:
            labels, root = self._label_array(), self.export_root()
            image_layer = self.image_combo.value
            if image_layer is None:
                raise ValueError("choose the image layer to export with the labels")
            kwargs = self.export_kwargs(np.asarray(image_layer.data), labels)
            sample_id = self.sample_id.value.strip()
            try:
                result = export_sample(root, sample_id, **kwargs)
            except SampleExists:
                choice = self.ask_existing(root, sample_id, next_version_id(root, sample_id))
                if choice is None:
                    self._note("export cancelled; nothing written")
                    return None
                result = export_sample(root, sample_id, if_exists=choice, **kwargs)
        except (FileProblem, ValueError) as exc:
            self._say(f"export: {exc}", error=True)
            return None
        c = result.changes
        self._say(
            f"exported {result.id}: {len(result.mask_names)} nuclei "
            f"({c.unchanged} kept their names) to {result.path}"
        )
        return result

    def export_kwargs(self, image: np.ndarray, labels: np.ndarray) -> dict:
        """The arguments of :func:`export_sample` but the root and the id."""
        layer = self._layer()
        record = layer.metadata
        original = source_labels(layer)
        return {
            "image": image,
            "labels": np.array(labels, copy=True),
            "original": original if original is not None else record.get(meta.BASELINE),
            "mask_names": record.get(meta.MASK_NAMES) if original is not None else None,
            "source": record.get(meta.SOURCE),
            "model": record.get(meta.MODEL),
            "split": self.split.value,
        }

    def save_tiff(self) -> Path | None:
        """Save the labels as one TIFF (the path in the "Labels TIFF" field)."""
        path = str(self.tiff.value or "")
        try:
            if path in ("", "."):
                raise ValueError("choose a .tif file to save the labels to")
            path = Path(path).with_suffix(".tif") if not path.endswith(".tif") else Path(path)
            overwrite = path.exists() and self.ask_overwrite(path)
            write_label_tiff(path, self._label_array(), overwrite=overwrite)
        except (FileProblem, ValueError) as exc:
            self._say(f"save TIFF: {exc}", error=True)
            return None
        self._say(f"saved labels to {path}")
        return path

    def ask_overwrite(self, path: Path) -> bool:
        """Ask whether to replace ``path``."""
        from qtpy.QtWidgets import QMessageBox

        answer = QMessageBox.question(self.native, "Replace?", f"{path} exists. Replace it?")
        return answer == QMessageBox.StandardButton.Yes

    def export_tiff_layout(self):
        """Convert the output root to ``<root>_tiff/images`` + ``masks`` in a worker thread."""
        from napari.qt.threading import create_worker

        try:
            root = self.export_root()
            out = root.with_name(root.name + "_tiff")
            overwrite = out.exists() and self.ask_overwrite(out)
            total = len(stage1.list_samples(root))
        except (FileProblem, ValueError) as exc:
            self._say(f"TIFF layout: {exc}", error=True)
            return None
        worker = create_worker(
            iter_export_tiff_layout,
            root,
            out,
            overwrite=overwrite,
            _progress={"total": total, "desc": "TIFF layout"},
        )
        worker.returned.connect(lambda path: self._say(f"wrote {path}"))
        worker.errored.connect(lambda exc: self._say(f"TIFF layout: {exc}", error=True))
        worker.start()
        return worker
