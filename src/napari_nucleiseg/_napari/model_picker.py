"""The model picker of the docks: a model list with its "Load checkpoint…" entry and its
card line, and the checkpoints trained in the same napari window.

The Segment and Train docks each hold one :class:`ModelPicker`. A checkpoint that
the Train dock saves goes to its window's :class:`TrainedModels`: every picker of
that window lists it (a Segment dock's also chooses it), and a dock opened later
starts with it in its list.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from magicgui.widgets import ComboBox, Label
from napari.utils.notifications import show_error
from psygnal import Signal
from qtpy.QtCore import QObject, Qt
from qtpy.QtCore import Signal as QtSignal
from qtpy.QtWidgets import QFileDialog

from ..errors import one_line
from ..kinds import HE_MODEL, auto_model
from ..models import DEFAULT_MODEL, ModelConfig, shipped_models
from ..models.choice import AUTO
from ._layers import narrow, text_lines
from ._lifetime import Lifetime
from ._models import model_card, model_config

#: the last entry of a model list: picking it opens a file dialog
LOAD = "Load checkpoint…"
NO_MODEL = (
    "No model is shipped with this install: choose 'Load checkpoint…' and pick a .pt file "
    "trained with `nucleiseg train`."
)


class TrainedModels(QObject):
    """The checkpoints trained in one napari window, in the order they were saved.

    A child of the window's ``QMainWindow``: it lives as long as the window, and
    every dock of the window finds the same one (:meth:`of`); nothing is kept at
    module level. ``added`` is emitted with each new path.
    """

    added = Signal(str)
    NAME = "napari-nucleiseg trained models"

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.setObjectName(self.NAME)
        self.paths: list[str] = []

    @classmethod
    def of(cls, viewer) -> TrainedModels:
        """The trained checkpoints of ``viewer``'s window (a new, unshared one for a
        viewer without a window)."""
        try:  # a public attribute that napari's proxy of the viewer hands out unwrapped
            window = viewer.window.main_menu.window()
        except (AttributeError, RuntimeError):  # a ViewerModel, or a window being closed
            return cls()
        found = window.findChild(cls, cls.NAME, Qt.FindChildOption.FindDirectChildrenOnly)
        return found if found is not None else cls(window)

    def add(self, path: str | os.PathLike) -> None:
        """Announce a newly trained checkpoint to every picker of the window."""
        path = str(Path(path).resolve())
        if path not in self.paths:
            self.paths.append(path)
        self.added.emit(path)


class ModelPicker:
    """A model list (shipped models, checkpoint files, "Load checkpoint…") and a card line
    that sums the chosen model up; the dock places ``combo`` and ``card`` where it likes.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The checkpoints trained in its window are listed, now and as they are saved.
    label : str
        The list's label.
    title : str
        The title of the file dialog behind "Load checkpoint…".
    on_change : callable
        Called with the chosen model's config, or None when no usable model is chosen,
        once the card shows the new choice.
    choose_trained : bool
        Whether a checkpoint trained in the window is also chosen, or only listed.
    image : callable, optional
        Returns, on the GUI thread, a function that reads a look at the image to segment (a
        plane or a crop of it), or None when there is no image. Given, the list starts with
        "auto", which picks the shipped model for that image's kind
        (:func:`napari_nucleiseg.kinds.auto_model`) as ``nucleiseg predict`` does, and the
        card says which. The look is read and judged in a worker (:attr:`looking`): a lazy
        layer's crop and the polarity statistics take long enough to stall the window.
    on_look : callable, optional
        Called when a look starts and when it ends (the dock holds its run meanwhile).
    """

    def __init__(
        self,
        viewer,
        label: str,
        title: str,
        on_change: Callable[[ModelConfig | None], None],
        choose_trained: bool,
        image: Callable[[], Callable[[], object] | None] | None = None,
        on_look: Callable[[], None] | None = None,
    ):
        self._title, self._on_change, self._choose_trained = title, on_change, choose_trained
        self._image, self._on_look = image, on_look or (lambda: None)
        self._auto = DEFAULT_MODEL  # what "auto" picked for the image last looked at
        self._look_job: object | None = None  # the look under way; only the latest reports
        self.trained = TrainedModels.of(viewer)
        self._checkpoints: list[str] = list(self.trained.paths)
        self.combo = ComboBox(label=label, choices=self._choices)
        self.card = Label(label="")
        narrow(self.combo)
        text_lines(self.card)
        self.card.native.setStyleSheet("color: gray;")
        self.combo.changed.connect(self._on_combo)
        self.combo.native.activated.connect(self._on_activated)
        self.trained.added.connect(self._on_trained)
        self._life = Lifetime()
        self.combo.native.destroyed.connect(self._life.end)
        self._looks = _Looks(self.combo.native)  # deleted with the list
        self._looks.done.connect(self._looked)

    @property
    def value(self) -> str | None:
        """The entry chosen: a shipped model's name, a checkpoint path, or :data:`LOAD`."""
        return self.combo.value

    @property
    def choices(self) -> tuple[str, ...]:
        """The entries offered, as values."""
        return self.combo.choices

    @property
    def chosen(self) -> str | None:
        """The model to use (a shipped name or a checkpoint path; with "auto", the one for the
        image now), None when there is none."""
        if self.combo.value == AUTO:
            return self._auto
        return None if self.combo.value in (None, LOAD) else self.combo.value

    @property
    def looking(self) -> bool:
        """Whether "auto" is still judging the image's kind (:attr:`chosen` may be the last
        image's model until it is done)."""
        return self._look_job is not None

    def refresh(self) -> None:
        """With "auto", judge the image now in a thread of its own (not Qt's shared pool, where
        a training or folder run would hold it up); the dock hears of it (``on_change``) only
        when the model changes (its thresholds stay as the user set them otherwise)."""
        if self.combo.value != AUTO:
            return
        read = self._image() if self._image is not None else None
        if read is None:  # no image: nothing to read
            self._look_job = None
            self._looked(None, DEFAULT_MODEL)
            return
        self._look_job = job = object()
        self.card.value, self.card.tooltip = "auto: judging this image's kind…", ""

        def look() -> None:
            picked = pick_model(read)
            try:
                self._looks.done.emit(job, picked)  # queued to the GUI thread
            except RuntimeError:
                pass  # the dock was deleted meanwhile

        threading.Thread(target=look, name="nucleiseg-look", daemon=True).start()
        self._on_look()

    def _looked(self, job: object | None, picked: str) -> None:
        """A look's pick, on the GUI thread; only the latest look counts."""
        if not self._life.alive or self._look_job is not job:
            return  # the dock is gone, the image changed again, or the model left "auto"
        self._look_job = None
        if picked != self._auto:
            self.update(picked=picked)
        else:
            self._show_card(report=False)  # the same model: the user's thresholds stay
        self._on_look()

    def _choices(self, _widget=None) -> list[tuple[str, str]]:
        """(label, value): "auto" (when the dock looks at images and models are shipped),
        shipped models (the default first), checkpoint files, LOAD."""
        names = sorted(shipped_models(), key=lambda n: n != DEFAULT_MODEL)
        files = [(Path(p).name, p) for p in self._checkpoints]
        auto = [("auto (by image kind)", AUTO)] if self._image is not None and names else []
        return auto + [(n, n) for n in names] + files + [(LOAD, LOAD)]

    def _on_activated(self, index: int) -> None:
        """A user's pick in the list (also when re-picking the current entry)."""
        if self.combo.native.itemText(index) == LOAD:
            self.ask_checkpoint()

    def ask_checkpoint(self) -> None:
        """Ask for a checkpoint file and load it."""
        path, _ = QFileDialog.getOpenFileName(
            self.combo.native, self._title, "", "Checkpoints (*.pt *.pth)"
        )
        if path:
            self.load_checkpoint(path)
        else:
            self._leave_load()

    def _leave_load(self) -> None:
        """Back to the first model when "Load checkpoint…" led nowhere."""
        if self.combo.value == LOAD and len(self.combo.choices) > 1:
            self.combo.value = self.combo.choices[0]

    def load_checkpoint(self, path: str | os.PathLike, select: bool = True) -> bool:
        """Offer a checkpoint file as model; a bad file gives a notification naming it.

        Parameters
        ----------
        path : str or os.PathLike
        select : bool
            Choose it; otherwise it is chosen only when no usable model is.

        Returns
        -------
        bool
            Whether the file was accepted.
        """
        path = str(Path(path).resolve())
        try:
            model_config(path)
        except (OSError, ValueError) as exc:  # FileProblem is a ValueError naming the file
            show_error(f"Cannot use this checkpoint: {one_line(exc)}")
            self._leave_load()
            return False
        if path not in self._checkpoints:
            self._checkpoints.append(path)
        current = None if self.combo.value == LOAD else self.combo.value  # "auto" stays
        self.combo.reset_choices()
        self.combo.value = path if select or current is None else current
        return True

    def _on_trained(self, path: str) -> None:
        self.load_checkpoint(path, select=self._choose_trained)

    def _on_combo(self, _value=None) -> None:
        """A new entry in the list: show it; with "auto", judge the image now."""
        self.update()
        self.refresh()

    def update(self, picked: str | None = None) -> None:
        """Show the chosen model on the card and tell the dock (``on_change``); with "auto",
        ``picked`` is the model a look chose (None: the last one)."""
        if self.combo.value != AUTO:
            self._look_job = None  # a look under way no longer counts
        elif picked is not None:
            self._auto = picked
        self._on_change(self._show_card())

    def _show_card(self, report: bool = True) -> ModelConfig | None:
        """Sum the chosen model up on the card; returns its config (None: none usable, and a
        notification when ``report``)."""
        source, config = self.chosen, None
        self.card.tooltip = ""
        if source is None:
            self.card.value = "Choose a model." if shipped_models() else NO_MODEL
            return None
        try:
            config = model_config(source)
        except (OSError, ValueError) as exc:
            if report:
                show_error(f"Cannot use model {source}: {one_line(exc)}")
            self.card.value = f"Cannot read this model: {one_line(exc)}"
            return None
        self.card.value, self.card.tooltip = model_card(source, config)
        if self.combo.value == AUTO:
            self.card.value = f"auto: {source} for this image. " + self.card.value
            self.card.tooltip = (
                f"'auto' segments H&E-like images (colour on a bright background) with "
                f"{HE_MODEL} when it is installed, every other image with "
                f"{DEFAULT_MODEL}; the thresholds follow the model picked.\n\n" + self.card.tooltip
            )
        return config

    def disconnect(self) -> None:
        """Stop listing what is trained in the window, and drop a look under way (the dock is
        closing)."""
        self.trained.added.disconnect(self._on_trained)
        self._look_job = None


class _Looks(QObject):
    """Carries a look's pick from its thread to the GUI thread (a queued signal)."""

    done = QtSignal(object, str)


def pick_model(read: Callable[[], object]) -> str:
    """The shipped model for the image that ``read()`` returns (in a worker): the default for
    an image whose kind cannot be judged (NaN, a read that fails), whose run names the
    problem."""
    try:
        return auto_model(read(), shipped_models(), DEFAULT_MODEL)
    except Exception:  # noqa: BLE001 (a lazy layer's reader may raise anything; the run says it)
        return DEFAULT_MODEL
