"""The "Train on curated data" dock widget: fine-tune a model on corrected samples.

The work is :func:`napari_nucleiseg.finetune.finetune`, a napari-free generator,
run in a worker; this module only reads the settings, draws the progress on a
:class:`~.loss_plot.LossPlot` and shows the result. The new checkpoint goes to
the window's trained models (:mod:`.model_picker`): every "Segment nuclei" dock
of the window lists it.
"""

from __future__ import annotations

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
from qtpy.QtWidgets import QFileDialog, QMessageBox
from superqt.utils import GeneratorWorker

from ..errors import FileProblem, NucleisegError, one_line
from ..finetune import FinetuneResult, Stage, finetune, finetune_settings, plan_validation
from ..reference import FINETUNE_EPOCHS, FINETUNE_LR, FINETUNE_REPEATS
from ..training import TrainConfig, TrainProgress
from ._layers import rows, scroll, section, show_line, text_lines
from ._lifetime import CloseWatcher, Lifetime, while_alive
from ._models import available_devices
from .loss_plot import LossPlot
from .model_picker import ModelPicker

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
        self._worker = None
        self._stop = threading.Event()
        self._life = Lifetime()
        self._build()
        self._connect()
        self._base.update()
        self._on_roots()

    # ---- layout -------------------------------------------------------------------------
    def _build(self) -> None:
        self._base = ModelPicker(
            self._viewer, "Base model", "Base model: a napari-nucleiseg checkpoint",
            on_change=self._update_train_button, choose_trained=False,
        )  # fmt: skip
        self._roots, self._add_root, roots_row = _path_row("Curated roots", "Add…")
        self._original, self._add_original, original_row = _path_row("Original data", "Choose…")
        self._holdout = FloatSpinBox(label="Hold out", min=0.0, max=0.9, step=0.05, value=0.2)
        self._validation = Label(label="")
        self._epochs = SpinBox(label="Epochs", min=1, max=10_000, value=FINETUNE_EPOCHS)
        self._repeats = SpinBox(label="Crops per sample", min=1, max=1000, value=FINETUNE_REPEATS)
        self._batch = SpinBox(label="Batch size", min=1, max=256, value=8)
        self._crop = SpinBox(label="Crop size", min=32, max=1024, step=16, value=256)
        self._optimizer = ComboBox(label="Optimiser", choices=OPTIMIZERS, value="adam")
        self._lr = FloatSpinBox(
            label="Learning rate", min=1e-5, max=1.0, step=1e-5, value=FINETUNE_LR
        )
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
            rows(self._base.combo, self._base.card, roots_row, original_row, self._holdout,
                 self._validation),
            settings, rows(self._output), self._train, self._progress, self._cancel,
            self._status, self._scores,
        ])  # fmt: skip
        theme = get_theme(self._viewer.theme)
        self._plot = LossPlot.themed(theme)
        self.native.layout().addWidget(self._plot)
        text_lines(self._validation, self._status, self._scores)
        self._validation.native.setStyleSheet("color: gray;")
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
        self._roots.changed.connect(self._on_roots)
        self._holdout.changed.connect(self._on_roots)
        self._add_root.changed.connect(self.ask_root)
        self._add_original.changed.connect(self.ask_original)
        self._output.changed.connect(self._update_train_button)
        self._train.changed.connect(self.train)
        self._cancel.changed.connect(self.cancel)
        self.native.destroyed.connect(self._life.end)
        self._watcher = CloseWatcher(self._base.disconnect)  # a run goes on: it may save
        self.native.installEventFilter(self._watcher)

    # ---- base model ---------------------------------------------------------------------
    def load_checkpoint(self, path: str | Path) -> bool:
        """Offer a checkpoint file as base model and choose it; a bad file gives a
        notification. Returns whether the file was accepted."""
        return self._base.load_checkpoint(path)

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
        return finetune_settings(
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
        ready = self._base.chosen is not None and bool(self.roots())
        self._train.enabled = ready and self._output.value is not None and self._worker is None

    def train(self, _value=None) -> bool:
        """Start fine-tuning (the Train button); returns whether a run started."""
        base, roots, output = self._base.chosen, self.roots(), self._output.value
        if self._worker is not None or base is None or not roots or output is None:
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
        self._stop = stop = threading.Event()
        self._life.stops = [stop]
        self._worker = create_worker(
            _job, base, roots, settings, output=output, original_root=original,
            val_fraction=float(self._holdout.value), overwrite=overwrite,
            device=self._device.value, should_stop=stop.is_set,
            _start_thread=False, _worker_class=GeneratorWorker,
            _connect={"yielded": self._on_yield(stop), "returned": self._on_result(stop),
                      "errored": self._on_error, "finished": self._on_finished},
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
        self._stop.set()
        self._cancel.enabled = False
        self._status.value = "Cancelling after the current step…"

    def _fail(self, message: str) -> None:
        show_line(self._status, message)
        show_error(message)

    # Worker callbacks: they do nothing once the widget is gone; those made per run see
    # the run's own stop flag.
    def _on_yield(self, stop: threading.Event):
        def on_yield(item) -> None:
            if not self._life.alive or stop.is_set():
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

    def _on_result(self, stop: threading.Event):
        def on_result(result: FinetuneResult) -> None:
            # Cancel and this callback both run on the GUI thread: a Cancel that came
            # while the worker saved is seen here, and the staged checkpoint is dropped.
            cancelled = result.cancelled or stop.is_set()
            if cancelled or not self._life.alive:
                result.discard()
            if not self._life.alive:
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
            self._base.trained.add(path)  # listed here, chosen in 'Segment nuclei'
            show_info(f"New model saved as {path.name}: 'Segment nuclei' offers it")

        return on_result

    @while_alive
    def _on_error(self, exc: Exception) -> None:
        self._fail(one_line(exc))

    @while_alive
    def _on_finished(self) -> None:
        self._worker = None
        self._progress.visible = self._cancel.visible = False
        self._update_train_button()


def _scores_text(result: FinetuneResult, cancelled: bool) -> str:
    """The before/after comparison, as rich text."""
    v = result.validation
    if cancelled:
        base = "" if result.base_score is None else f" (base model: {result.base_score:.3f})"
        return f"Cancelled before the end: nothing to compare{base}."
    if not v.ids:
        return (
            f"No validation samples: the models were not compared ({result.n_train} trained on)."
            + _reference_text(result)
        )
    base = "–" if result.base_score is None else f"{result.base_score:.3f}"
    new = "–" if result.new_score is None else f"{result.new_score:.3f}"
    gain = ""
    if result.base_score is not None and result.new_score is not None:
        gain = f" ({result.new_score - result.base_score:+.3f})"
    how = "flagged" if v.how == "flagged" else "held out"
    return (
        f"DSB2018 score on {len(v.ids)} {how} validation sample(s):<br>"
        f"base model <b>{base}</b> → new model <b>{new}</b>{gain}" + _reference_text(result)
    )


def _reference_text(result: FinetuneResult) -> str:
    """The reference set's kinds before and after (what the base knew), a warning in bold."""
    if result.reference is None:
        return ""
    lines = [line.replace(" -> ", " → ") for line in result.reference.lines()]
    if result.reference.forgotten:
        lines[-1] = f"<b>{lines[-1]}</b>"
    return "<br>Reference set of other kinds, base → new:<br>" + "<br>".join(lines)
