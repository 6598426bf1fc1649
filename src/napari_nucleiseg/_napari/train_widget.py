"""The "Train on curated data" dock widget: fine-tune a model on corrected samples.

The work is :func:`napari_nucleiseg.finetune.finetune`, a napari-free generator,
run in a worker; this module only reads the settings, draws the progress (a
small loss / validation-score plot painted with QPainter) and shows the result.
The new checkpoint is offered to every "Segment nuclei" widget docked in the
same viewer.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

import napari
from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from napari.utils.theme import get_theme
from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QFileDialog, QMessageBox, QSizePolicy, QWidget
from superqt.utils import GeneratorWorker

from ..errors import FileProblem, NucleisegError
from ..finetune import FinetuneResult, Stage, finetune, plan_validation
from ..training import TrainConfig, TrainProgress
from ._layers import narrow, rows, scroll, section, show_line, text_lines
from ._models import (
    LOAD,
    ask_checkpoint_file,
    available_devices,
    model_card,
    model_choices,
    model_config,
    one_line,
    usable_checkpoint,
)

OPTIMIZERS = (("Adam", "adam"), ("SGD", "sgd"), ("RMSProp", "rmsprop"))
ROOT_SEP = ";"


class TrainingFailed(NucleisegError):
    """A run failed; the message is one line (shown as a notification)."""


def _job(base, roots, settings, **kwargs):
    """The worker: :func:`finetune`, any failure re-raised as one-line :class:`TrainingFailed`.

    A worker treats a returned or raised ``RuntimeError`` (torch's usual error)
    specially, so every failure is re-raised as our own type.
    """
    try:
        return (yield from finetune(base, roots, settings, **kwargs))
    except Exception as exc:
        raise TrainingFailed(f"Training failed: {one_line(exc)}") from exc


class _Run:
    """One run's stop flag and whether the widget still exists (no reference to the widget)."""

    def __init__(self):
        self.stop = threading.Event()
        self.alive = True

    def end(self, *_) -> None:
        self.alive = False
        self.stop.set()


class LossPlot(QWidget):
    """Training loss per step (line, left scale) and validation DSB score per epoch (dots, 0-1).

    The base model's score is a dashed line, so the gain is seen at a glance.
    """

    def __init__(self, colors: dict[str, str], parent=None):
        super().__init__(parent)
        self._colors = {k: QColor(v) for k, v in colors.items()}
        self.setMinimumHeight(150)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.clear()

    def clear(self) -> None:
        """Forget the curves (a new run)."""
        self.losses: list[float] = []
        self.scores: list[tuple[int, float]] = []  # (steps so far, score)
        self.base: float | None = None
        self.total = 1
        self.update()

    def add_step(self, loss: float, total: int) -> None:
        self.losses.append(loss)
        self.total = max(total, len(self.losses), 1)
        self.update()

    def add_score(self, score: float) -> None:
        self.scores.append((len(self.losses), score))
        self.update()

    def set_base(self, score: float | None) -> None:
        self.base = score
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        c = self._colors
        w, h = self.width(), self.height()
        left, right, top, bottom = 34, 30, 18, 6
        pw, ph = max(w - left - right, 1), max(h - top - bottom, 1)
        p.setPen(QPen(c["grid"], 1))
        p.drawRect(left, top, pw, ph)
        finite = [v for v in self.losses if math.isfinite(v)]
        hi = max(finite, default=1.0) or 1.0

        def x(step: float) -> float:
            return left + pw * step / self.total

        def y(frac: float) -> float:
            return top + ph * (1 - min(max(frac, 0.0), 1.0))

        p.setPen(c["text"])
        p.drawText(2, top + 10, f"{hi:.2g}")
        p.drawText(2, top + ph, "0")
        p.drawText(left + pw + 4, top + 10, "1")
        p.drawText(left + pw + 4, top + ph, "0")
        p.setPen(c["loss"])
        p.drawText(left, top - 5, "loss")
        p.setPen(c["score"])
        p.drawText(left + 40, top - 5, "validation score")
        if self.base is not None:
            p.setPen(c["base"])
            p.drawText(left + 160, top - 5, "base model")
            pen = QPen(c["base"], 1, Qt.PenStyle.DashLine)
            p.setPen(pen)
            p.drawLine(QPointF(left, y(self.base)), QPointF(left + pw, y(self.base)))
        if len(self.losses) > 1:
            p.setPen(QPen(c["loss"], 1.5))
            points = [
                QPointF(x(i + 1), y(v / hi)) for i, v in enumerate(self.losses) if math.isfinite(v)
            ]
            p.drawPolyline(QPolygonF(points))
        p.setPen(QPen(c["score"], 2))
        p.setBrush(c["score"])
        dots = [QPointF(x(s), y(v)) for s, v in self.scores]
        if len(dots) > 1:
            p.drawPolyline(QPolygonF(dots))
        for dot in dots:
            p.drawEllipse(dot, 3.0, 3.0)
        p.end()


def _path_row(label: str, button: str) -> tuple[LineEdit, PushButton, Container]:
    """A labelled row of a path field and the button that opens its folder dialog."""
    edit, push = LineEdit(label=""), PushButton(text=button)
    row = Container(label=label, layout="horizontal", labels=False, widgets=[edit, push])
    row.margins = (0, 0, 0, 0)
    return edit, push, row


class TrainWidget(Container):
    """Fine-tune a model on curated stage-1 roots, compare it with its base, and save it.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    """

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=False)
        self._viewer = viewer
        self._checkpoints: list[str] = []
        self._worker = None
        self._run = _Run()
        self._total_steps = 1
        self._build()
        self._connect()
        self._base.reset_choices()
        self._on_base()
        self._on_roots()

    # ---- layout -------------------------------------------------------------------------
    def _build(self) -> None:
        self._base = ComboBox(label="Base model", choices=self._base_choices)
        narrow(self._base)
        self._card = Label(label="")
        self._roots, self._add_root, roots_row = _path_row("Curated roots", "Add…")
        self._original, self._add_original, original_row = _path_row("Original data", "Choose…")
        self._holdout = FloatSpinBox(label="Hold out", min=0.0, max=0.9, step=0.05, value=0.2)
        self._validation = Label(label="")
        self._epochs = SpinBox(label="Epochs", min=1, max=10_000, value=10)
        self._repeats = SpinBox(label="Crops per sample", min=1, max=1000, value=8)
        self._batch = SpinBox(label="Batch size", min=1, max=256, value=8)
        self._crop = SpinBox(label="Crop size", min=32, max=1024, step=16, value=256)
        self._optimizer = ComboBox(label="Optimiser", choices=OPTIMIZERS, value="adam")
        self._lr = FloatSpinBox(label="Learning rate", min=1e-5, max=1.0, step=1e-5, value=1e-4)
        self._wd = FloatSpinBox(label="Weight decay", min=0.0, max=0.1, step=1e-5, value=1e-4)
        self._device = ComboBox(label="Device", choices=available_devices())
        self._output = FileEdit(label="Save as", mode="w", filter="*.pt", nullable=True)
        self._train = PushButton(text="Train", label="")
        self._progress = ProgressBar(min=0, max=1000, label="", visible=False)
        self._cancel = PushButton(text="Cancel", label="", visible=False)
        self._status = Label(label="")
        self._scores = Label(label="")
        settings = section(
            "Training settings",
            [self._epochs, self._repeats, self._batch, self._crop, self._optimizer, self._lr,
             self._wd, self._device],
            expanded=False,
        )  # fmt: skip
        self.extend([
            rows(self._base, self._card, roots_row, original_row, self._holdout,
                 self._validation),
            settings, rows(self._output), self._train, self._progress, self._cancel,
            self._status, self._scores,
        ])  # fmt: skip
        theme = get_theme(self._viewer.theme)
        self._plot = LossPlot({
            "grid": theme.foreground.as_hex(), "text": theme.text.as_hex(),
            "loss": theme.text.as_hex(), "score": theme.current.as_hex(), "base": "#e0a030",
        })  # fmt: skip
        self.native.layout().addWidget(self._plot)
        text_lines(self._card, self._validation, self._status, self._scores)
        for line in (self._card, self._validation):
            line.native.setStyleSheet("color: gray;")
        self._train.native.setStyleSheet(
            f"QPushButton {{ font-weight: bold; padding: 7px; background-color: "
            f"{theme.current.as_hex()}; color: white; }} "
            "QPushButton:disabled { background-color: gray; }"
        )
        self._roots.native.setPlaceholderText(f"folders, separated by '{ROOT_SEP}'")
        self._original.native.setPlaceholderText("optional, e.g. stage1_train")
        self._roots.tooltip = "Stage-1 roots of corrected samples ('Correct masks' exports them)"
        self._original.tooltip = (
            "Optional original training data, mixed in to keep what the model knew "
            "(its samples never validate; the base model's excluded ids are skipped)"
        )
        self._holdout.tooltip = (
            "Share of curated samples held out for validation when none is flagged "
            "'validation' in the roots' manifest.json"
        )
        self._repeats.tooltip = "Random augmented crops drawn from each sample per epoch"
        self._output.tooltip = "Where the new checkpoint is written when training ends"
        self._train.tooltip = "Fine-tune the base model on the curated samples"
        scroll(self)

    def _connect(self) -> None:
        self._base.changed.connect(self._on_base)
        self._base.native.activated.connect(self._on_base_activated)
        self._roots.changed.connect(self._on_roots)
        self._holdout.changed.connect(self._on_roots)
        self._add_root.changed.connect(self.ask_root)
        self._add_original.changed.connect(self.ask_original)
        self._output.changed.connect(self._update_train_button)
        self._train.changed.connect(self.train)
        self._cancel.changed.connect(self.cancel)
        self.native.destroyed.connect(self._run.end)

    # ---- base model ---------------------------------------------------------------------
    def _base_choices(self, _widget=None) -> list[tuple[str, str]]:
        return model_choices(self._checkpoints)

    def _on_base_activated(self, index: int) -> None:
        if self._base.native.itemText(index) == LOAD:
            path = ask_checkpoint_file(self.native, "Base model: a napari-nucleiseg checkpoint")
            if path:
                self.load_checkpoint(path)
            elif len(self._base.choices) > 1:
                self._base.value = self._base.choices[0]

    def load_checkpoint(self, path: str | Path, select: bool = True) -> bool:
        """Offer a checkpoint file as base model; a bad file gives a notification.

        Returns
        -------
        bool
            Whether the file was accepted.
        """
        path = usable_checkpoint(path)
        if path is None:
            return False
        if path not in self._checkpoints:
            self._checkpoints.append(path)
        current = self._base.value
        self._base.reset_choices()
        self._base.value = path if select or current in (None, LOAD) else current
        return True

    def _on_base(self, _value=None) -> None:
        source = self._base.value
        self._card.tooltip = ""
        if source in (None, LOAD):
            self._card.value = "No shipped model here: choose 'Load checkpoint…'."
        else:
            try:
                self._card.value, self._card.tooltip = model_card(source, model_config(source))
            except (OSError, ValueError) as exc:
                self._card.value = f"Cannot read this model: {one_line(exc)}"
        self._update_train_button()

    # ---- data ---------------------------------------------------------------------------
    def roots(self) -> list[Path]:
        """The curated roots typed or added, in order."""
        return [Path(p.strip()) for p in self._roots.value.split(ROOT_SEP) if p.strip()]

    def add_root(self, path: str | Path) -> None:
        """Append a curated root (suggests the output path when none is set)."""
        roots = [*self.roots(), Path(path)]
        self._roots.value = f"{ROOT_SEP} ".join(str(r) for r in roots)

    def ask_root(self, _value=None) -> None:
        path = QFileDialog.getExistingDirectory(self.native, "A root of curated samples")
        if path:
            self.add_root(path)

    def ask_original(self, _value=None) -> None:
        path = QFileDialog.getExistingDirectory(self.native, "Original stage-1 training data")
        if path:
            self._original.value = path

    def _on_roots(self, _value=None) -> None:
        """Say which samples will validate (cheap: folder listings and manifests)."""
        roots = self.roots()
        self._holdout.enabled = True
        if not roots:
            self._validation.value = "Add a folder of curated samples."
        else:
            try:
                plan = plan_validation(roots, self._holdout.value)
            except (OSError, ValueError) as exc:
                self._validation.value = one_line(exc)
            else:
                self._validation.value = "Validation: " + plan.describe()
                self._holdout.enabled = plan.how != "flagged"  # used only when none is flagged
                if self._output.value is None:
                    name = f"{roots[0].name}-finetuned.pt"
                    self._output.value = roots[0].resolve().parent / name
        self._update_train_button()

    # ---- the run ------------------------------------------------------------------------
    def settings(self) -> TrainConfig:
        """The training settings chosen."""
        return TrainConfig(
            epochs=int(self._epochs.value),
            batch_size=int(self._batch.value),
            crop_size=int(self._crop.value),
            repeats=int(self._repeats.value),
            optimizer=self._optimizer.value,
            lr=float(self._lr.value),
            weight_decay=float(self._wd.value),
        )

    def confirm_overwrite(self, path: Path) -> bool:
        """Ask whether to replace an existing checkpoint (tests replace this method)."""
        answer = QMessageBox.question(
            self.native,
            "Replace checkpoint?",
            f"{path} exists. Replace it with the new model when training ends?",
        )
        return answer == QMessageBox.StandardButton.Yes

    def _update_train_button(self, _value=None) -> None:
        ready = self._base.value not in (None, LOAD) and bool(self.roots())
        self._train.enabled = ready and self._output.value is not None and self._worker is None

    def train(self, _value=None) -> bool:
        """Start fine-tuning (the Train button); returns whether a run started."""
        base, roots, output = self._base.value, self.roots(), self._output.value
        if self._worker is not None or base in (None, LOAD) or not roots or output is None:
            return False
        output = Path(output)
        if output.suffix == "":
            output = output.with_suffix(".pt")
        overwrite = output.exists()
        if overwrite and not self.confirm_overwrite(output):
            show_line(self._status, f"Not started: {output.name} exists; choose another name.")
            return False
        try:
            plan_validation(roots, self._holdout.value)  # a bad root: say so now
            settings = self.settings()
        except (OSError, ValueError) as exc:
            self._fail(f"Cannot train: {one_line(exc)}")
            return False
        original = self._original.value.strip() or None
        self._run = run = _Run()
        self.native.destroyed.connect(run.end)
        self._worker = create_worker(
            _job, base, roots, settings, output=output, original_root=original,
            val_fraction=float(self._holdout.value), overwrite=overwrite,
            device=self._device.value, should_stop=run.stop.is_set,
            _start_thread=False, _worker_class=GeneratorWorker,
            _connect={"yielded": self._on_yield(run), "returned": self._on_result(run),
                      "errored": self._on_error(run), "finished": self._on_finished(run)},
        )  # fmt: skip
        self._plot.clear()
        self._scores.value = ""
        self._progress.value = 0
        self._progress.visible = self._cancel.visible = True
        self._cancel.enabled = True
        self._status.value = "Starting…"
        self._update_train_button()
        self._worker.start()
        return True

    def cancel(self, _value=None) -> None:
        """Stop the run before the next optimiser step; no checkpoint is written."""
        if self._worker is None:
            return
        self._run.stop.set()
        self._cancel.enabled = False
        self._status.value = "Cancelling after the current step…"

    def _fail(self, message: str) -> None:
        show_line(self._status, message)
        show_error(message)

    # Worker callbacks: made per run, they do nothing once the widget is gone.
    def _on_yield(self, run: _Run):
        def on_yield(item) -> None:
            if not run.alive or run.stop.is_set():
                return
            if isinstance(item, Stage):
                self._status.value = f"{item.text} ({item.done + 1}/{item.total})…"
            elif isinstance(item, TrainProgress):
                self._show_progress(item)

        return on_yield

    def _show_progress(self, p: TrainProgress) -> None:
        total = max(p.epochs * p.steps, 1)
        done = (p.epoch - 1) * p.steps + p.step
        if p.phase == "step":
            self._plot.add_step(p.loss, total)
            self._progress.value = int(1000 * done / total)
            self._status.value = (
                f"Epoch {p.epoch}/{p.epochs}, step {p.step}/{p.steps}: loss {p.loss:.3f}"
            )
        else:
            val = "" if p.val_score is None else f", validation score {p.val_score:.3f}"
            if p.val_score is not None:
                self._plot.add_score(p.val_score)
            self._status.value = f"Epoch {p.epoch}/{p.epochs} done: loss {p.loss:.3f}{val}"

    def _on_result(self, run: _Run):
        def on_result(result: FinetuneResult) -> None:
            # Cancel and this callback both run on the GUI thread: a Cancel that came
            # while the worker saved is seen here, and the staged checkpoint is dropped.
            cancelled = result.cancelled or run.stop.is_set()
            if cancelled or not run.alive:
                result.discard()
            if not run.alive:
                return
            self._plot.set_base(result.base_score)
            self._scores.value = _scores_text(result, cancelled)
            if cancelled:
                self._status.value = "Cancelled: no checkpoint was written."
                return
            try:
                path = result.commit()
            except FileProblem as exc:
                self._fail(f"Not saved: {one_line(exc)}")
                return
            show_line(self._status, f"Saved {path}")
            self.load_checkpoint(path, select=False)
            offered = offer_to_segment_widgets(self._viewer, path)
            where = " and added to 'Segment nuclei'" if offered else ""
            show_info(f"New model saved as {path.name}{where}")

        return on_result

    def _on_error(self, run: _Run):
        def on_error(exc: Exception) -> None:
            if run.alive:
                self._fail(one_line(exc))

        return on_error

    def _on_finished(self, run: _Run):
        def on_finished() -> None:
            if not run.alive:
                return
            self._worker = None
            self._progress.visible = self._cancel.visible = False
            self._update_train_button()

        return on_finished


def _scores_text(result: FinetuneResult, cancelled: bool) -> str:
    """The before/after comparison, as rich text."""
    v = result.validation
    if cancelled:
        base = "" if result.base_score is None else f" (base model: {result.base_score:.3f})"
        return f"Cancelled before the end: nothing to compare{base}."
    if not v.ids:
        return f"No validation samples: the models were not compared ({result.n_train} trained on)."
    base = "–" if result.base_score is None else f"{result.base_score:.3f}"
    new = "–" if result.new_score is None else f"{result.new_score:.3f}"
    gain = ""
    if result.base_score is not None and result.new_score is not None:
        gain = f" ({result.new_score - result.base_score:+.3f})"
    how = "flagged" if v.how == "flagged" else "held out"
    return (
        f"DSB2018 score on {len(v.ids)} {how} validation sample(s):<br>"
        f"base model <b>{base}</b> → new model <b>{new}</b>{gain}"
    )


def offer_to_segment_widgets(viewer, path: Path) -> int:
    """Add a checkpoint to the model list of every "Segment nuclei" widget docked in ``viewer``.

    Returns
    -------
    int
        How many widgets took it.
    """
    from .segment_widget import SegmentWidget

    try:
        docked = list(viewer.window.dock_widgets.values())
    except (AttributeError, RuntimeError):  # no window (headless viewer) or being closed
        return 0
    taken = 0
    for widget in docked:
        if isinstance(widget, SegmentWidget) and hasattr(widget, "load_checkpoint"):
            taken += bool(widget.load_checkpoint(path))
    return taken
