"""The "Train on curated data" dock widget in a real viewer (needs a display: run under xvfb-run).

The base model is a tiny 2-level U-Net whose random features get a 1x1 head
fitted by least squares on the fluorescence sample, so that its DSB2018 score
is not zero; one test fine-tunes the shipped default model when there is one.
The curated root is exported with :func:`napari_nucleiseg.io.export.export_sample`
from the two shipped samples: histology to train on, fluorescence flagged
"validation".
"""

from __future__ import annotations

import shutil
import threading

import pytest
from napari.utils.notifications import NotificationSeverity
from qtpy.QtCore import QObject, Signal

from conftest import open_dock
from napari_nucleiseg._napari.train_widget import TrainWidget
from napari_nucleiseg.finetune import plan_validation
from napari_nucleiseg.io import read_sample
from napari_nucleiseg.io.export import export_sample
from napari_nucleiseg.models import (
    DEFAULT_MODEL,
    load_model,
    shipped_models,
)
from napari_nucleiseg.samples import sample_folder

WAIT_MS = 30_000


@pytest.fixture
def base_checkpoint(tiny_checkpoint):
    """The shared tiny U-Net fitted to the fluorescence sample (tests/conftest.py)."""
    return tiny_checkpoint


@pytest.fixture(scope="module")
def curated(tmp_path_factory):
    """A curated root: histology for training, fluorescence flagged "validation"."""
    root = tmp_path_factory.mktemp("curated") / "curated"
    for kind, split in (("histology", "train"), ("fluorescence", "validation")):
        s = read_sample(sample_folder(kind))
        export_sample(root, s.id, s.image, s.labels, original=s.labels, split=split)
    return root


def make_widget(viewer, base=None, roots=(), output=None) -> TrainWidget:
    widget = open_dock(viewer, "Train on curated data")
    if base is not None:
        assert widget.load_checkpoint(base)
    for root in roots:
        widget.add_root(root)
    widget._epochs.value, widget._repeats.value = 2, 1
    widget._batch.value, widget._crop.value = 2, 64
    widget._device.value = "cpu"
    if output is not None:
        widget._output.value = output
    return widget


def run_to_end(qtbot, widget) -> None:
    assert widget.train()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=WAIT_MS)


def test_finetune_saves_checkpoint_and_shows_scores(
    make_napari_viewer, qtbot, base_checkpoint, curated, tmp_path, monkeypatch
):
    viewer = make_napari_viewer()
    segment = open_dock(viewer, "Segment nuclei")
    output = tmp_path / "new.pt"
    output.write_bytes(b"an old file")  # replaced, after the user agrees
    asked = []
    monkeypatch.setattr(TrainWidget, "confirm_overwrite", lambda self, p: asked.append(p) or True)
    widget = make_widget(viewer, base_checkpoint, [curated], output)
    assert "1 of 2 curated samples flagged 'validation'" in widget._validation.value
    run_to_end(qtbot, widget)
    assert asked == [output]
    model, config = load_model(output)
    scores = config.training.scores
    assert config.training.val_ids == [read_sample(sample_folder("fluorescence")).id]
    assert scores["validation"] == "flagged" and scores["n_train"] == 1
    assert scores["base_model"] == str(base_checkpoint.resolve())
    assert config.training.base["source"] == scores["base_model"]  # the base's record travels
    assert str(curated.resolve()) in config.training.data_roots
    assert config.training.settings["crop_size"] == 64 and config.training.epochs == 2
    assert scores["base_val_dsb"] > 0.05  # the fitted head finds nuclei
    text = widget._scores.value
    assert f"<b>{scores['base_val_dsb']:.3f}</b>" in text
    assert f"<b>{scores['val_dsb']:.3f}</b>" in text
    assert widget._plot.base == pytest.approx(scores["base_val_dsb"])
    assert len(widget._plot.losses) == 2 and len(widget._plot.scores) == 2
    assert "Saved" in widget._status.value
    # the reference set was mixed in, and scored before and after, kind by kind
    assert scores["n_replay_crops"] > 0
    before, after = scores["reference_before"], scores["reference_after"]
    assert len(before) >= 5 and set(before) == set(after)
    kind = sorted(before)[0]
    assert f"{kind}: {before[kind]:.3f} → {after[kind]:.3f}" in text
    # the new model is offered here (as a base) and chosen in the segmentation widget
    new = str(output.resolve())
    assert new in widget._base.choices and widget._base.value == str(base_checkpoint.resolve())
    assert segment._model.value == new


def test_a_trained_model_reaches_the_docks_of_its_window_only(
    make_napari_viewer, base_checkpoint, tmp_path
):
    """What the Train dock saves is chosen in the window's Segment dock, listed as a base,
    and listed by a Segment dock opened later; never by another window's docks."""
    viewer, other = make_napari_viewer(), make_napari_viewer()
    segment, elsewhere = open_dock(viewer, "Segment nuclei"), open_dock(other, "Segment nuclei")
    train = open_dock(viewer, "Train on curated data")
    before = elsewhere._model.value, train._base.value
    saved, again = tmp_path / "saved.pt", tmp_path / "again.pt"
    for path in (saved, again):
        path.write_bytes(base_checkpoint.read_bytes())
    train._base.trained.add(saved)  # what the Train dock does when a run is saved
    new = str(saved.resolve())
    assert segment._model.value == new
    assert new in train._base.choices and train._base.value == before[1]
    assert new not in elsewhere._model.choices and elsewhere._model.value == before[0]
    viewer.window.remove_dock_widget(segment.native)  # a closed dock stops listening
    train._base.trained.add(again)
    assert str(again.resolve()) not in segment._model.choices
    later = open_dock(viewer, "Segment nuclei")
    assert later is not segment
    assert {new, str(again.resolve())} <= set(later._model.choices)
    assert later._model.value == before[0]  # listed, not chosen: nothing was saved since
    assert new not in open_dock(other, "Train on curated data")._base.choices


def test_held_out_fraction_when_none_flagged(make_napari_viewer, curated, tmp_path):
    plain = tmp_path / "plain"
    for kind in ("fluorescence", "histology"):
        shutil.copytree(sample_folder(kind), plain / sample_folder(kind).name)
    plan = plan_validation([plain], fraction=0.2)
    assert plan.how == "held-out" and len(plan.ids) == 1 and len(plan.curated) == 2
    assert plan_validation([plain], fraction=0.0).how == "none"
    viewer = make_napari_viewer()
    widget = make_widget(viewer, roots=[plain])
    assert "holding out 1 of 2" in widget._validation.value
    assert widget._output.value == tmp_path / "plain-finetuned.pt"
    widget.add_root(curated)  # flags in any manifest win
    assert "flagged" in widget._validation.value and not widget._holdout.enabled


def test_cancel_writes_no_checkpoint(make_napari_viewer, qtbot, base_checkpoint, curated, tmp_path):
    viewer = make_napari_viewer()
    output = tmp_path / "cancelled.pt"
    widget = make_widget(viewer, base_checkpoint, [curated], output)
    widget._epochs.value = 500
    assert widget.train()
    qtbot.waitUntil(lambda: len(widget._plot.losses) > 0, timeout=WAIT_MS)
    widget.cancel()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=10_000)
    assert not output.exists()
    assert "Cancelled" in widget._status.value
    assert not list(tmp_path.glob(".cancelled.pt*"))  # no temporary file left either
    assert widget._train.enabled


class CancelFromWorker(QObject):
    """Click Cancel on the GUI thread from inside the worker, and wait until it was handled:
    a user's click landing at one exact moment of the run."""

    requested = Signal()

    def __init__(self, widget):
        super().__init__()
        self.widget, self.handled, self.calls = widget, threading.Event(), 0
        self.requested.connect(self._click)  # queued: the worker emits, the GUI thread clicks

    def _click(self) -> None:
        self.widget._cancel.native.click()
        self.handled.set()

    def __call__(self) -> None:
        self.calls += 1
        if self.calls == 1:
            self.requested.emit()
            assert self.handled.wait(10), "Cancel was not handled"


@pytest.mark.parametrize("moment", ["step", "last epoch done", "validation", "saving"])
def test_cancel_writes_nothing_whatever_the_moment(
    make_napari_viewer, qtbot, base_checkpoint, curated, tmp_path, monkeypatch, moment
):
    """Cancel during a step, right after the last epoch, during validation or while the
    checkpoint is saved: no file, no model offered to any dock, the old file untouched."""
    import napari_nucleiseg.finetune as finetune_module
    import napari_nucleiseg.training.loop as loop

    viewer = make_napari_viewer()
    segment = open_dock(viewer, "Segment nuclei")
    output = tmp_path / "new.pt"
    output.write_bytes(b"the user's old model")
    monkeypatch.setattr(TrainWidget, "confirm_overwrite", lambda self, p: True)
    widget = make_widget(viewer, base_checkpoint, [curated], output)
    offered = [list(segment._model.choices), list(widget._base.choices)]
    cancel = CancelFromWorker(widget)
    if moment == "validation":
        evaluate = loop.evaluate

        def evaluating(model, config, samples, device, stop):
            return evaluate(model, config, samples, device, lambda: cancel() or stop())

        monkeypatch.setattr(loop, "evaluate", evaluating)
    elif moment == "saving":
        save = finetune_module.save_checkpoint

        def saving(*args, **kwargs):
            path = save(*args, **kwargs)
            cancel()
            return path

        monkeypatch.setattr(finetune_module, "save_checkpoint", saving)
    assert widget.train()
    if moment in ("step", "last epoch done"):

        def on_progress(item) -> None:
            last = getattr(item, "phase", "") == "epoch" and item.epoch == item.epochs
            if (moment == "step" and getattr(item, "phase", "") == "step") or (
                moment == "last epoch done" and last
            ):
                if widget._cancel.enabled:
                    widget._cancel.native.click()

        widget._worker.yielded.connect(on_progress)
    qtbot.waitUntil(lambda: widget._worker is None, timeout=WAIT_MS)
    assert moment in ("step", "last epoch done") or cancel.calls >= 1
    assert "Cancelled" in widget._status.value, widget._status.value
    assert output.read_bytes() == b"the user's old model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.pt"]  # nothing staged is left
    assert [list(segment._model.choices), list(widget._base.choices)] == offered
    assert widget._train.enabled


def test_bad_root_and_bad_checkpoint_notify(make_napari_viewer, base_checkpoint, tmp_path, notes):
    viewer = make_napari_viewer()
    widget = make_widget(viewer, base_checkpoint, [tmp_path / "nowhere"], tmp_path / "out.pt")
    assert "does not exist" in widget._validation.value
    assert not widget.train()
    errors = [n for n in notes if n.severity == NotificationSeverity.ERROR]
    assert errors and "nowhere" in errors[-1].message and "does not exist" in errors[-1].message
    assert "\n" not in errors[-1].message
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert not widget.load_checkpoint(bad)
    assert "Cannot use this checkpoint" in notes[-1].message and "bad.pt" in notes[-1].message
    assert str(bad.resolve()) not in widget._base.choices
    assert not (tmp_path / "out.pt").exists()


def test_existing_output_needs_confirmation(
    make_napari_viewer, base_checkpoint, curated, tmp_path, monkeypatch
):
    viewer = make_napari_viewer()
    output = tmp_path / "keep.pt"
    output.write_bytes(b"precious")
    monkeypatch.setattr(TrainWidget, "confirm_overwrite", lambda self, p: False)
    widget = make_widget(viewer, base_checkpoint, [curated], output)
    assert not widget.train()
    assert widget._worker is None
    assert output.read_bytes() == b"precious"
    assert "exists" in widget._status.value


@pytest.mark.skipif(not shipped_models(), reason="no shipped weights in this checkout yet")
def test_finetune_shipped_model(make_napari_viewer, qtbot, curated, tmp_path):
    viewer = make_napari_viewer()
    widget = make_widget(viewer, roots=[curated], output=tmp_path / "shipped-ft.pt")
    assert widget._base.value == DEFAULT_MODEL
    widget._epochs.value = 1
    run_to_end(qtbot, widget)
    _, config = load_model(tmp_path / "shipped-ft.pt")
    assert config.training.scores["base_model"] == DEFAULT_MODEL
    assert "new model" in widget._scores.value
