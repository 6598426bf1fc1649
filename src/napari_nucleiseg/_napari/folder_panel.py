"""The "Segment a folder" part of the Segment dock: every image of a folder (or stage-1 root)
to files on disk, then browsed as lazy stacks and corrected one image at a time.

Glue only: the batch is :func:`napari_nucleiseg.batch.plan_batch` and
:func:`~napari_nucleiseg.batch.run_batch`, what ``nucleiseg predict`` runs, in a
worker thread with the dock's model, device, thresholds, tile size and flips
(``settings()``). Layers are touched only on the GUI thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path

import napari
import numpy as np
from magicgui.widgets import (
    CheckBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
)
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error
from superqt.utils import GeneratorWorker

from ..batch import MEASUREMENTS, BatchPlan, BatchSummary, plan_batch, run_batch
from ..errors import one_line
from ..io.images import read_image_file, read_label_image
from ..io.lazy import batch_stacks
from ..models.choice import AUTO, ModelChoice
from ..pipeline import Cancelled, Progress
from . import _layers
from . import _metadata as meta
from ._lifetime import Lifetime, while_alive
from ._models import get_model
from .reader import SampleIdOverlay
from .results_panel import chosen_formats, format_boxes, format_rows

BROWSE_IMAGES, BROWSE_LABELS = "folder results", "folder results nuclei"


@dataclass
class FolderJob:
    """What a folder run needs, read from the widgets on the GUI thread."""

    inputs: list[str]
    output: str
    formats: tuple[str, ...]
    measure: bool
    resume: bool
    overwrite: bool
    pixel_size: float | None  # µm per pixel; None: what each file records
    settings: dict  # model (or "auto"), device, post, tile_size, tta, choices, diameter
    stop: threading.Event = field(default_factory=threading.Event)


def run_folder(job: FolderJob) -> Generator[Progress, None, BatchSummary | None]:
    """The worker: check the batch, then segment it; None when cancelled."""
    s = job.settings
    plan = plan_batch(
        job.inputs,
        job.output,
        formats=job.formats,
        measure_to=Path(job.output) / MEASUREMENTS if job.measure else None,
        pixel_size=job.pixel_size,
        resume=job.resume,
        overwrite=job.overwrite,
        how_to_replace="tick Overwrite to replace, or Resume to keep the complete outputs",
        choices=s["choices"],
    )
    yield Progress(0.0, f"{len(plan.todo)} image(s) to segment")
    try:
        return (
            yield from run_batch(
                plan, ModelChoice(s["model"], s["device"], load=get_model),  # the dock's cache
                post=s["post"], device=s["device"], diameter=s["diameter"],
                tile_size=s["tile_size"], tta=s["tta"], stop=job.stop,
            )
        )  # fmt: skip
    except Cancelled:
        return None


class FolderPanel(Container):
    """The "Segment a folder" section.

    ``settings()`` gives the dock's ``{"model", "device", "post", "tile_size", "tta",
    "choices", "diameter"}`` (the model None when none is chosen, "auto" for each image's).
    """

    def __init__(self, viewer: napari.viewer.Viewer, settings: Callable[[], dict]):
        super().__init__(labels=False)
        self.margins = (0, 0, 0, 0)
        self._viewer, self._settings = viewer, settings
        self._worker = self._job = None
        self._plan: BatchPlan | None = None
        self._models: dict[str, str] = {}  # the model of each image of the last run
        self._life = Lifetime()
        self.folder = FileEdit(mode="d", label="Folder", value="")
        self.output = FileEdit(mode="d", label="Output", value="")
        self.formats = format_boxes(("tiff",))
        self.measure = CheckBox(text=f"Measurements ({MEASUREMENTS})", value=True, label="")
        self.pixel_size = FloatSpinBox(
            label="Pixel size (µm)", min=0.0, max=1000.0, step=0.001, value=0.0,
            tooltip="µm per pixel for every image; 0: what each file records (OME-TIFF, "
            "ImageJ TIFF, CZI ...), else pixels",
        )  # fmt: skip
        self.resume = CheckBox(text="Resume (keep complete outputs)", label="")
        self.overwrite = CheckBox(text="Overwrite", label="")
        self.run_button = PushButton(text="Segment folder", label="")
        self.progress = ProgressBar(min=0, max=1000, label="", visible=False)
        self.cancel_button = PushButton(text="Cancel", label="", visible=False)
        self.status = Label(label="")
        self.correct_button = PushButton(
            text="Correct the image on screen", label="", visible=False
        )
        _layers.text_lines(self.status)
        self.folder.tooltip = "Images (PNG, TIFF, JPEG; CZI/ND2/LIF with bioio), or a stage-1 root"
        self.output.tooltip = "Where <id>.tif etc. go; empty: '<folder>_nuclei' beside the folder"
        self.extend([
            _layers.section(
                "Segment a folder",
                [self.folder, self.output, *format_rows(self.formats), self.measure,
                 self.pixel_size, self.resume, self.overwrite, self.run_button, self.progress,
                 self.cancel_button, self.status, self.correct_button],
                expanded=False,
            )
        ])  # fmt: skip
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.correct_button.changed.connect(self.open_on_screen)
        self.resume.changed.connect(lambda on: on and setattr(self.overwrite, "value", False))
        self.overwrite.changed.connect(lambda on: on and setattr(self.resume, "value", False))
        self.native.destroyed.connect(self._life.end)

    def output_folder(self) -> Path:
        chosen = str(self.output.value)
        if chosen not in ("", "."):
            return Path(chosen)
        folder = Path(self.folder.value)
        return folder.with_name(f"{folder.name}_nuclei")

    # ---- the run ------------------------------------------------------------------------
    def run(self, _value=None) -> None:
        """Segment every image of the folder (the Segment folder button)."""
        settings = self._settings()
        folder = str(self.folder.value)
        if self._worker is not None:
            return
        if folder in ("", ".") or settings.get("model") is None:
            self._say("Choose a folder and a model first.", error=True)
            return
        self._job = job = FolderJob(
            inputs=[folder], output=str(self.output_folder()),
            formats=chosen_formats(self.formats), measure=self.measure.value,
            resume=self.resume.value, overwrite=self.overwrite.value, settings=settings,
            pixel_size=self.pixel_size.value or None,
        )  # fmt: skip
        self._life.stops = [job.stop]
        self._worker = create_worker(
            run_folder, job, _start_thread=False, _worker_class=GeneratorWorker,
            _connect={"yielded": self._on_step, "returned": self._on_done,
                      "errored": self._on_failed, "finished": self._on_finished},
        )  # fmt: skip
        self.progress.value = 0
        self.progress.visible = self.cancel_button.visible = True
        self.cancel_button.enabled = True
        self.run_button.enabled = False
        _layers.show_line(self.status, f"Checking {folder}…")
        self._worker.start()

    def cancel(self, _value=None) -> None:
        """Stop after the network layer running; the images done so far stay on disk."""
        if self._worker is None:
            return
        self._job.stop.set()
        # no worker.quit(): a generator left at a yield would keep its stop hooks on the
        # model (shared with the next run) until garbage collection; the stop event ends it
        # with Cancelled, running its clean-up
        self.cancel_button.enabled = False
        self.status.value = "Cancelling…"

    def wait(self, timeout: float = 60.0) -> None:
        """Block until the run ends (for scripts and tests)."""
        if self._worker is not None:
            self._worker.await_workers(int(timeout * 1000))

    def _say(self, message: str, error: bool = False) -> None:
        _layers.show_line(self.status, message)
        if error:
            show_error(message)

    @while_alive
    def _on_step(self, step: Progress) -> None:
        self.progress.value = int(1000 * step.fraction)
        if not self._job.stop.is_set():
            _layers.show_line(self.status, step.text)

    @while_alive
    def _on_failed(self, exc: Exception) -> None:
        self._say(f"Segmenting the folder failed: {one_line(exc)}", error=True)

    @while_alive
    def _on_finished(self) -> None:
        cancelled = self._job is not None and self._job.stop.is_set()
        self._worker = None
        self.progress.visible = self.cancel_button.visible = False
        self.run_button.enabled = True
        if cancelled:
            self.status.value = (
                "Cancelled; the images done so far are on disk (tick Resume to go on)."
            )

    @while_alive
    def _on_done(self, summary: BatchSummary | None) -> None:
        if summary is None or self._job.stop.is_set():
            return
        plan = self._plan = summary.plan
        self._models = summary.models
        before = f", {summary.done_before} done before" if summary.done_before else ""
        table = f"; table {plan.table.name}" if plan.table is not None else ""
        self._say(
            f"{summary.nuclei} nuclei in {summary.images} image(s){before} -> {plan.output}{table}"
        )
        self.browse(plan)

    # ---- the results --------------------------------------------------------------------
    def browse(self, plan: BatchPlan) -> None:
        """Show the batch as lazy stacks under a slider: images and their nuclei."""
        ids = [i for i, _ in plan.inputs]
        label_files = [plan.label_file(i) for i in ids]
        if any(f is None for f in label_files):
            return  # no label image among the formats: nothing to browse
        shapes = [plan.shapes[i] for i in ids]  # read by the worker: no header read here
        images, labels = batch_stacks([p for _, p in plan.inputs], label_files, shapes)
        record = {meta.STAGE1_IDS: ids, meta.SOURCE: str(plan.output)}
        common = {"metadata": record, "axis_labels": ("image", "y", "x")}
        for name in (BROWSE_IMAGES, BROWSE_LABELS):
            if name in self._viewer.layers:
                self._viewer.layers.remove(name)
        overlay = SampleIdOverlay(self._viewer)  # the image id on the canvas, as for a root
        overlay.connect()
        self._viewer.add_image(
            images, name=BROWSE_IMAGES, rgb=images.ndim == 4, contrast_limits=(0, 255), **common
        )
        layer = self._viewer.add_labels(labels, name=BROWSE_LABELS, **common)
        layer.contour = 1
        overlay()
        self.correct_button.visible = True

    def on_screen(self) -> int:
        """The index of the batch image on screen."""
        layer = self._viewer.layers[BROWSE_IMAGES]
        index = int(round(layer.world_to_data(self._viewer.dims.point)[0]))
        return min(max(index, 0), len(self._plan.inputs) - 1)

    def open_on_screen(self, _value=None) -> None:
        """Open the image on screen and its nuclei as 2-D layers, for the Correct masks dock."""
        if self._plan is None or BROWSE_IMAGES not in self._viewer.layers:
            return
        image_id, path = self._plan.inputs[self.on_screen()]
        label_file = self._plan.label_file(image_id)
        try:
            image = read_image_file(path)
            labels = read_label_image(label_file)
        except Exception as exc:
            self._say(one_line(exc), error=True)
            return
        source = {meta.SAMPLE_ID: image_id, meta.SOURCE: str(path)}
        for name in (image_id, f"{image_id} nuclei"):
            if name in self._viewer.layers:
                self._viewer.layers.remove(name)
        rgb = image.ndim == 3 and image.shape[-1] in (3, 4)
        self._viewer.add_image(image, name=image_id, rgb=rgb, metadata=dict(source))
        chosen = self._job.settings["model"] if self._job else None  # for images done before
        model = self._models.get(image_id) or (None if chosen == AUTO else chosen)
        layer = self._viewer.add_labels(
            np.asarray(labels), name=f"{image_id} nuclei",
            metadata={**source, meta.OUTPUT: True, meta.MODEL: model},
        )  # fmt: skip
        for name in (BROWSE_IMAGES, BROWSE_LABELS):
            self._viewer.layers[name].visible = False
        self._viewer.layers.selection.active = layer
        self._say(f"{image_id}: correct it with Correct masks; its labels file is {label_file}")
