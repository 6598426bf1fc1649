"""The "Segment nuclei" dock widget in a real viewer (needs a display: run under xvfb-run).

A tiny U-Net serves as the model: random weights whose 1x1 head is fitted by
least squares on the fluorescence sample (one forward pass), so that it finds
real nuclei in a second; one test uses the shipped default model when present.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from napari.layers import Labels
from napari.utils.notifications import NotificationSeverity
from PIL import Image as PILImage

from conftest import judged, open_dock
from napari_nucleiseg import inference, kinds
from napari_nucleiseg._napari import _metadata as meta
from napari_nucleiseg._napari import _models, model_picker, sample_data
from napari_nucleiseg._napari._models import get_model, model_card, model_config
from napari_nucleiseg._napari.segment_widget import PLANE_ON_SCREEN, SegmentWidget
from napari_nucleiseg.io import read_sample
from napari_nucleiseg.io.images import read_label_image
from napari_nucleiseg.kinds import HE_MODEL
from napari_nucleiseg.metrics import score_image
from napari_nucleiseg.models import DEFAULT_MODEL, ModelConfig, TrainingInfo, shipped_models
from napari_nucleiseg.models.choice import AUTO
from napari_nucleiseg.pipeline import labels_from_predicted
from napari_nucleiseg.samples import sample_folder

#: a regression floor: the shipped default model's DSB2018 score on the fluorescence sample
SHIPPED_SCORE_FLOOR = 0.40  # dsb2018-unet measured 0.441 (CPU, 2026-11-25, stage 3, shape split 2)
WAIT_MS = 30_000


@pytest.fixture(scope="module")
def sample():
    return read_sample(sample_folder("fluorescence"))


def open_sample(viewer):
    for data, kwargs, kind in sample_data.fluorescence():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    return viewer.layers[0]


def make_widget(viewer, checkpoint=None) -> SegmentWidget:
    widget = open_dock(viewer, "Segment nuclei")
    if checkpoint is not None:
        assert widget.load_checkpoint(checkpoint)
    return widget


def segment(qtbot, widget) -> Labels:
    judged(qtbot, widget)
    widget.run()
    assert widget._worker is not None
    qtbot.waitUntil(lambda: widget._worker is None, timeout=WAIT_MS)
    name = f"{widget._image.value.name} nuclei"
    layer = widget._viewer.layers[name]  # the dock's viewer is napari's proxy: unwrap it
    return getattr(layer, "__wrapped__", layer)


def test_segment_sample_gives_labels_and_score(make_napari_viewer, qtbot, tiny_checkpoint, sample):
    viewer = make_napari_viewer()
    widget = make_widget(viewer, tiny_checkpoint)  # docked first: input and reference follow
    image = open_sample(viewer)
    image.scale, image.translate = (0.5, 0.5), (10, 20)
    assert widget._image.value is image
    assert widget._reference.value is viewer.layers[f"{image.name} masks"]
    labels = segment(qtbot, widget)
    assert isinstance(labels, Labels) and labels.data.shape == sample.labels.shape
    assert labels.data.max() > 20  # the tiny model finds most of the 57 nuclei
    np.testing.assert_array_equal(labels.scale, image.scale)
    np.testing.assert_array_equal(labels.translate, image.translate)
    assert f"<b>{labels.data.max()}</b> nuclei" in widget._status.value
    score = score_image(sample.labels, labels.data)
    qtbot.waitUntil(lambda: "DSB2018 score" in widget._score.value, timeout=WAIT_MS)
    assert f"DSB2018 score <b>{score.score:.3f}</b>" in widget._score.value
    assert f"<b>{score.ap[8]:.3f}</b>" in widget._score.value  # AP at 0.9


def test_rerun_replaces_the_layer(make_napari_viewer, qtbot, tiny_checkpoint):
    viewer = make_napari_viewer()
    open_sample(viewer)
    widget = make_widget(viewer, tiny_checkpoint)
    first = segment(qtbot, widget)
    n_layers = len(viewer.layers)
    widget._show_maps.value = True  # adds the maps of the kept result at once
    assert len(viewer.layers) == n_layers + 2
    second = segment(qtbot, widget)
    assert second is first and len(viewer.layers) == n_layers + 2
    assert [layer.name for layer in viewer.layers].count(first.name) == 1


def test_stack_gives_stack_of_labels(make_napari_viewer, qtbot, tiny_checkpoint, sample):
    viewer = make_napari_viewer()
    grey = sample.image[..., 0] if sample.image.ndim == 3 else sample.image
    planes = [grey, np.fliplr(grey), np.zeros_like(grey)]
    image = viewer.add_image(np.stack(planes).astype(np.uint16) * 200, name="stack")
    widget = make_widget(viewer, tiny_checkpoint)
    assert not widget._planes.native.isHidden()
    labels = segment(qtbot, widget)
    assert labels.data.shape == (3, *grey.shape)
    assert labels.data[0].max() > 20 and labels.data[1].max() > 20 and labels.data[2].max() == 0
    # only the plane on screen: the other planes keep what the layer held
    kept = labels.data.copy()
    viewer.dims.set_current_step(0, 2)
    image.data[2] = image.data[0]
    widget._planes.value = PLANE_ON_SCREEN
    segment(qtbot, widget)
    np.testing.assert_array_equal(labels.data[:2], kept[:2])
    np.testing.assert_array_equal(labels.data[2], kept[0])


def test_rgba_and_float_input(make_napari_viewer, qtbot, tiny_checkpoint, sample):
    viewer = make_napari_viewer()
    grey = sample.image[..., 0] if sample.image.ndim == 3 else sample.image
    rgba = np.dstack([grey, grey, grey, np.full_like(grey, 255)])
    viewer.add_image(rgba, name="rgba", rgb=True)
    viewer.add_image(grey.astype(np.float32) / 255, name="float")
    widget = make_widget(viewer, tiny_checkpoint)
    results = {}
    for name in ("rgba", "float"):
        widget._image.value = viewer.layers[name]
        assert widget._planes.native.isHidden()
        results[name] = segment(qtbot, widget).data
        assert results[name].shape == grey.shape and results[name].max() > 20
    np.testing.assert_array_equal(results["rgba"], results["float"])


def test_threshold_reruns_postprocessing_only(
    make_napari_viewer, qtbot, tiny_checkpoint, monkeypatch
):
    viewer = make_napari_viewer()
    open_sample(viewer)
    widget = make_widget(viewer, tiny_checkpoint)
    _, config = get_model(tiny_checkpoint, widget._device.value)
    calls = []
    built = inference.runner  # the forward passes of every run go through it

    def counted(model, device):
        forward = built(model, device)
        return lambda x: calls.append(1) or forward(x)

    monkeypatch.setattr(inference, "runner", counted)
    labels = segment(qtbot, widget)
    assert calls, "the network ran for the first result"
    n_calls, before = len(calls), labels.data.copy()
    widget._prob.value = 0.7
    qtbot.waitUntil(lambda: not np.array_equal(labels.data, before), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: widget._relabel_worker is None, timeout=WAIT_MS)
    post = replace(config.postprocess, prob_threshold=0.7, seed_threshold=0.6, min_size=10)
    maps = widget._result.maps[0]
    expected = labels_from_predicted(maps, config, replace(post, split_depth=0.0))
    np.testing.assert_array_equal(labels.data, expected)
    # the shape split is a knob like the others
    split = labels_from_predicted(maps, config, replace(post, split_depth=0.5))
    assert split.max() > expected.max(), "this image must have merged nuclei to split"
    widget._split.value = 0.5
    qtbot.waitUntil(lambda: widget._relabel_worker is None, timeout=WAIT_MS)
    np.testing.assert_array_equal(labels.data, split)
    # and the smallest mean probability: the nuclei the network is unsure of go
    sure = labels_from_predicted(maps, config, replace(post, split_depth=0.5, min_mean_prob=0.9))
    assert 0 < sure.max() < split.max(), "this image must have nuclei of both kinds"
    widget._min_prob.value = 0.9
    qtbot.waitUntil(lambda: widget._relabel_worker is None, timeout=WAIT_MS)
    np.testing.assert_array_equal(labels.data, sure)
    assert len(calls) == n_calls, "moving a threshold must not run the network again"


def test_cancel_stops_a_long_run_and_adds_no_layer(make_napari_viewer, qtbot, tiny_checkpoint):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    viewer.add_image(rng.integers(0, 255, (3, 2048, 2048), dtype=np.uint8), name="big")
    widget = make_widget(viewer, tiny_checkpoint)
    widget._tta.value = True  # minutes of work on this CPU
    names = [layer.name for layer in viewer.layers]
    widget.run()
    qtbot.wait(300)  # inside the first forward pass (4 tiles of 1024x1024)
    assert widget._worker is not None
    widget._cancel.changed.emit(True)  # the Cancel button
    start = time.perf_counter()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=10_000)
    print(f"cancel took {time.perf_counter() - start:.3f} s")
    assert [layer.name for layer in viewer.layers] == names
    assert widget._result is None and "Cancelled" in widget._status.value
    assert widget._run.enabled


def test_bad_checkpoint_gives_a_notification(make_napari_viewer, qtbot, tmp_path, notes):
    viewer = make_napari_viewer()
    open_sample(viewer)
    widget = make_widget(viewer)
    before = widget._model.value  # 'auto', or 'Load checkpoint…' without shipped models
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"not a checkpoint")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    for path in (bad, other):
        assert not widget.load_checkpoint(path)
        errors = [n for n in notes if n.severity == NotificationSeverity.ERROR]
        assert errors and path.name in errors[-1].message and "\n" not in errors[-1].message
        assert str(path) not in [c for c in widget._model.choices]
    assert widget._model.value == before  # a refused file leaves the choice as it was
    judged(qtbot, widget)
    assert widget._run.enabled == (before == AUTO)


def test_failed_run_is_a_notification(make_napari_viewer, qtbot, tmp_path, tiny_checkpoint, notes):
    viewer = make_napari_viewer()
    open_sample(viewer)
    gone = tmp_path / "gone.pt"
    gone.write_bytes(tiny_checkpoint.read_bytes())
    widget = make_widget(viewer, gone)
    gone.unlink()
    widget.run()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=WAIT_MS)
    errors = [n for n in notes if n.severity == NotificationSeverity.ERROR]
    assert errors and "gone.pt" in errors[-1].message
    assert not any(layer.name.endswith(" nuclei") for layer in viewer.layers)


def test_no_model_and_devices(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = make_widget(viewer)
    values = widget._device.choices
    assert values[0] == "auto" and "cpu" in values
    assert ("cuda" in values) == torch.cuda.is_available()
    assert "Runs on" in widget._device_line.value
    if not shipped_models():
        assert widget._model.choices == ("Load checkpoint…",)
        assert "Load checkpoint" in widget._model.card.value and not widget._run.enabled


def test_input_follows_the_layer_list_and_close_disconnects(make_napari_viewer, tiny_checkpoint):
    viewer = make_napari_viewer()
    widget = make_widget(viewer, tiny_checkpoint)
    assert widget._image.value is None and not widget._run.enabled
    first = viewer.add_image(np.zeros((64, 64), np.uint8), name="a")
    second = viewer.add_image(np.zeros((64, 64), np.uint8), name="b")
    assert widget._image.value is second
    viewer.layers.selection.active = first
    assert widget._image.value is first and widget._run.enabled
    assert widget.load_checkpoint(tiny_checkpoint)
    assert "no training record" in widget._model.card.value
    viewer.window.remove_dock_widget(widget.native)
    assert widget._viewer_events == []
    viewer.layers.selection.active = second
    assert widget._image.value is first  # no longer follows the layer list


def test_shipped_model_scores_on_the_sample(make_napari_viewer, qtbot, sample):
    if DEFAULT_MODEL not in shipped_models():
        pytest.skip(f"no shipped weights yet (weights/{DEFAULT_MODEL}.pt is missing)")
    viewer = make_napari_viewer()
    open_sample(viewer)
    widget = make_widget(viewer)
    assert widget._model.value == AUTO and judged(qtbot, widget) == DEFAULT_MODEL
    widget._device.value = "cpu"
    labels = segment(qtbot, widget)
    assert f"by {DEFAULT_MODEL} (auto)" in widget._status.value
    score = score_image(sample.labels, labels.data).score
    print(f"{DEFAULT_MODEL} on the fluorescence sample: DSB {score:.3f}")
    assert score >= SHIPPED_SCORE_FLOOR
    qtbot.waitUntil(lambda: "DSB2018 score" in widget._score.value, timeout=WAIT_MS)
    assert f"<b>{score:.3f}</b>" in widget._score.value


def test_auto_picks_the_model_of_each_image_kind_and_says_which(make_napari_viewer, qtbot):
    """The model list's "auto" (the default, as in ``nucleiseg predict``) gives an H&E image
    the H&E model and a fluorescence image the default one: the card says which before
    the run, the thresholds follow it, and the status says which ran."""
    if not {DEFAULT_MODEL, HE_MODEL} <= set(shipped_models()):
        pytest.skip(f"{DEFAULT_MODEL} and {HE_MODEL} are not both installed")
    viewer = make_napari_viewer()
    he = viewer.add_image(read_sample(sample_folder("histology")).image, name="H&E")
    grey = viewer.add_image(read_sample(sample_folder("fluorescence")).image, name="DAPI")
    widget = open_dock(viewer, "Segment nuclei")
    widget._device.value = "cpu"
    for layer, name in ((he, HE_MODEL), (grey, DEFAULT_MODEL), (he, HE_MODEL)):
        widget._image.value = layer
        assert widget._model.value == AUTO and judged(qtbot, widget) == name
        assert widget._model.card.value.startswith(f"auto: {name} for this image")
        own = model_config(name).postprocess
        assert widget._prob.value == pytest.approx(own.prob_threshold)
    widget._prob.value = 0.6  # a threshold the user set stays while the pick is the same
    widget._image.value = viewer.add_image(he.data[::-1], name="H&E flipped")
    assert judged(qtbot, widget) == HE_MODEL and widget._prob.value == pytest.approx(0.6)
    labels = segment(qtbot, widget)
    assert labels.data.max() > 10
    assert f"by {HE_MODEL} (auto)" in widget._status.value
    assert labels.metadata[meta.MODEL] == HE_MODEL
    # an image whose kind cannot be judged (NaN) gets the default model, not a broken dock
    nan = viewer.add_image(np.full((64, 64), np.nan, np.float32), name="NaN")
    widget._image.value = nan
    assert judged(qtbot, widget) == DEFAULT_MODEL


def test_auto_judges_the_image_in_a_worker_and_holds_the_run_meanwhile(
    make_napari_viewer, qtbot, monkeypatch
):
    """Reading a lazy layer's crop and its polarity statistics can stall the window, so "auto"
    judges the image in a thread: the Segment button waits for it, the card says so, and
    only the pick for the image now on the dock, while the list says "auto", counts."""
    if not {DEFAULT_MODEL, HE_MODEL} <= set(shipped_models()):
        pytest.skip(f"{DEFAULT_MODEL} and {HE_MODEL} are not both installed")
    gates = {320: threading.Event(), 256: threading.Event()}  # by width: H&E, DAPI
    on_gui_thread, finished = [], []

    def slow_pick(image, installed, default):
        on_gui_thread.append(threading.current_thread() is threading.main_thread())
        assert gates[image.shape[1]].wait(timeout=WAIT_MS / 1000)
        finished.append(image.shape[1])
        return kinds.auto_model(image, installed, default)

    monkeypatch.setattr(model_picker, "auto_model", slow_pick)
    viewer = make_napari_viewer()
    widget = open_dock(viewer, "Segment nuclei")
    he = viewer.add_image(read_sample(sample_folder("histology")).image, name="H&E")
    assert widget._image.value is he and widget._model.looking and not widget._run.enabled
    assert "judging" in widget._model.card.value
    viewer.add_image(read_sample(sample_folder("fluorescence")).image, name="DAPI")
    gates[256].set()  # the DAPI look ends first ...
    assert judged(qtbot, widget) == DEFAULT_MODEL and widget._run.enabled
    assert widget._model.card.value.startswith(f"auto: {DEFAULT_MODEL} for this image")
    gates[320].set()  # ... then the stale H&E one, whose pick is dropped
    qtbot.waitUntil(lambda: len(finished) == 2, timeout=WAIT_MS)
    qtbot.wait(100)  # its queued result reaches the GUI thread
    assert widget._model.chosen == DEFAULT_MODEL and widget._run.enabled
    assert on_gui_thread == [False, False]
    # a model chosen by hand while "auto" judges: the look no longer counts
    gates[320].clear()
    widget._image.value = he
    assert widget._model.looking and not widget._run.enabled
    widget._model.combo.value = HE_MODEL
    assert not widget._model.looking and widget._run.enabled
    widget._model.combo.value = DEFAULT_MODEL
    gates[320].set()
    qtbot.waitUntil(lambda: len(finished) == 3, timeout=WAIT_MS)
    qtbot.wait(100)
    assert widget._model.chosen == DEFAULT_MODEL and widget._model.value == DEFAULT_MODEL
    widget._model.combo.value = AUTO  # back to "auto": it judges the H&E image again
    assert judged(qtbot, widget) == HE_MODEL and widget._run.enabled


def test_a_folder_run_with_auto_gives_each_image_its_kinds_model(
    make_napari_viewer, qtbot, tmp_path
):
    """A folder of an H&E and a fluorescence image under "auto": each file gets the model
    of its kind and that model's own normalisation and thresholds, as the dock gives the
    image on screen, whichever image the dock shows."""
    if not {DEFAULT_MODEL, HE_MODEL} <= set(shipped_models()):
        pytest.skip(f"{DEFAULT_MODEL} and {HE_MODEL} are not both installed")
    viewer = make_napari_viewer()
    widget = open_dock(viewer, "Segment nuclei")
    widget._device.value = "cpu"
    folder = tmp_path / "images"
    folder.mkdir()
    single = {}
    for kind, name in (("histology", "he"), ("fluorescence", "dapi")):
        image = read_sample(sample_folder(kind)).image
        PILImage.fromarray(image).save(folder / f"{name}.png")
        widget._image.value = viewer.add_image(image, name=name)
        assert widget._model.value == AUTO
        single[name] = segment(qtbot, widget).data.copy()
    assert judged(qtbot, widget) == DEFAULT_MODEL  # the dock shows the fluorescence image
    panel = widget.folder_panel
    panel.folder.value = folder
    panel.output.value = tmp_path / "out"
    before = _models._model.cache_info()
    panel.run()
    qtbot.waitUntil(lambda: panel._worker is None, timeout=WAIT_MS)
    after = _models._model.cache_info()  # both models as the dock loaded them, none afresh
    assert after.misses == before.misses and after.hits >= before.hits + 2
    for name, labels in single.items():
        np.testing.assert_array_equal(read_label_image(tmp_path / "out" / f"{name}.tif"), labels)
    for index, name, model in ((0, "dapi", DEFAULT_MODEL), (1, "he", HE_MODEL)):
        viewer.dims.set_point(0, index)  # the results under the slider, opened to correct
        panel.open_on_screen()
        assert viewer.layers[f"{name} nuclei"].metadata[meta.MODEL] == model


def test_model_card_counts_the_epochs_of_every_stage(tiny_checkpoint):
    first = TrainingInfo(data_roots=["stage1_train_fixed"], epochs=14)
    second = replace(first, epochs=20, base=first.lineage("stage1.pt"))
    third = replace(first, epochs=28, base=second.lineage("stage2.pt"), scores={"val_dsb": 0.5})
    line, tooltip = model_card(tiny_checkpoint, ModelConfig("unet", training=third))
    assert "62 epochs in 3 stages on stage1_train_fixed" in line
    assert "Epochs: 14 + 20 + 28;" in tooltip
    line, tooltip = model_card(tiny_checkpoint, ModelConfig("unet", training=first))
    assert "14 epochs on stage1_train_fixed" in line and "Epochs: 14;" in tooltip


def test_status_cuts_long_names_in_the_middle_and_forgets_another_image(
    make_napari_viewer, qtbot, tiny_checkpoint
):
    viewer = make_napari_viewer()
    widget = make_widget(viewer, tiny_checkpoint)
    image = open_sample(viewer)
    image.name = long = "8b59819fbc92eefe45b1db95c0" + "0123456789abcdef" * 2 + "d0f8e1"
    widget.run()
    assert long not in widget._status.value  # a 64-character id would be cut at the right
    assert "8b59819fbc" in widget._status.value and "d0f8e1…" in widget._status.value
    assert long in widget._status.tooltip
    qtbot.waitUntil(lambda: widget._worker is None, timeout=WAIT_MS)
    assert "nuclei found" in widget._status.value
    other = viewer.add_image(np.zeros((64, 64), np.uint8), name="other")
    viewer.layers.selection.active = other
    assert widget._image.value is other
    assert widget._status.value == "" and not widget._score.visible
