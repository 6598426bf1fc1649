"""The forward pass inference runs: batch norm folded, cached per weights, stoppable, and the
model it was made from left as it was."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

from napari_nucleiseg.inference import drain, predict_maps
from napari_nucleiseg.io import read_sample
from napari_nucleiseg.metrics import score_image
from napari_nucleiseg.models import ModelConfig, load_model
from napari_nucleiseg.pipeline import Cancelled, segment
from napari_nucleiseg.preprocess import normalize
from napari_nucleiseg.runner import (
    _RUNNERS,
    BACKEND_VARIABLE,
    backend,
    exact,
    folded,
    runner,
    stop_switch,
)
from napari_nucleiseg.samples import sample_folder

CPU = torch.device("cpu")


def _trained_like(config: ModelConfig) -> torch.nn.Module:
    """A small model whose batch norms hold statistics far from the identity, as after training."""
    torch.manual_seed(0)
    model = config.build()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.2, 3)
                m.weight.uniform_(0.5, 2)
                m.bias.uniform_(-0.5, 0.5)
    return model


@pytest.mark.parametrize("architecture", ["unet", "linknet"])
def test_folded_model_gives_the_models_outputs(architecture):
    config = ModelConfig(architecture, {"depth": 2, "base": 8} if architecture == "unet" else {})
    model = _trained_like(config).eval()
    net = folded(model)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert not norms or architecture == "linknet"  # every U-Net norm follows a convolution
    assert len(norms) < sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    x = torch.rand(2, 1, 64, 96)
    with torch.inference_mode():
        assert torch.allclose(net(x), model(x), atol=1e-4, rtol=1e-4)


def test_shipped_model_folded_gives_the_same_maps_on_a_real_image():
    model, config = load_model("dsb2018-unet")
    image = read_sample(sample_folder("fluorescence")).image[:256, :256]
    x = torch.from_numpy(normalize(image, config))[None]
    with torch.inference_mode():
        plain, fast = torch.sigmoid(model.eval()(x)), torch.sigmoid(folded(model)(x))
    assert plain.std() > 0.1  # nuclei and background, not a flat map
    assert (plain - fast).abs().max() < 1e-4


@pytest.mark.parametrize("engine", ["torch", "onnxruntime"])
def test_runner_is_built_once_per_weights_and_leaves_the_model_alone(monkeypatch, engine):
    monkeypatch.setenv(BACKEND_VARIABLE, engine)  # float: the model's outputs to 1e-4
    config = ModelConfig("unet", {"depth": 2, "base": 4})
    model = _trained_like(config).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    first = runner(model, CPU)
    assert runner(model, CPU) is first  # cached
    x = torch.rand(1, 1, 32, 32)
    with torch.inference_mode():
        old = first(x)
    assert model.training  # not put in eval mode, not moved, not changed
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():  # a training step changes the weights in place
        next(model.parameters()).mul_(-1)
    again = runner(model, CPU)
    assert again is not first
    with torch.inference_mode():
        model.eval()
        assert not torch.allclose(again(x), old)
        assert torch.allclose(again(x), model(x), atol=1e-4)


def test_stop_switch_interrupts_a_forward_pass_before_its_first_layer():
    config = ModelConfig("unet", {"depth": 2, "base": 4})
    model = config.build().eval()
    stop, layers = threading.Event(), []
    spy = [m.register_forward_pre_hook(lambda m, a: layers.append(m)) for m in model.modules()]
    forward = runner(model, CPU)  # a copy made with the spies on: they must not come along
    stop.set()
    with stop_switch(stop), pytest.raises(Cancelled), torch.inference_mode():
        forward(torch.zeros(1, 1, 32, 32))
    with stop_switch(None), torch.inference_mode():  # no switch, or one not set: it runs
        forward(torch.zeros(1, 1, 32, 32))
    assert not layers  # the model's own hooks are not the runner's
    for handle in spy:
        handle.remove()


@pytest.mark.parametrize("engine", ["torch", "onnxruntime", "onnxruntime-int8"])
def test_a_stop_set_from_another_thread_cancels_a_forward_pass_in_flight(monkeypatch, engine):
    """One forward pass of seconds (one 2048x2048 tile), stopped 0.3 s in from another
    thread: it ends within a fraction of its time (each layer checks, ONNX Runtime's run is
    terminated), and the next run of the thread goes through."""
    monkeypatch.setenv(BACKEND_VARIABLE, engine)
    config = ModelConfig("unet", {"depth": 3, "base": 32})
    model = config.build().eval()
    grey = read_sample(sample_folder("fluorescence")).image[..., 0]
    image = np.tile(grey, (8, 8))  # 2048x2048 of real structure (noise alone is not run)
    drain(predict_maps(model, config, image[:64, :64]))  # built (exported, quantised) before
    start = time.perf_counter()
    drain(predict_maps(model, config, image, tile_size=2048))
    whole = time.perf_counter() - start
    stop = threading.Event()
    timer = threading.Timer(0.3, stop.set)
    start = time.perf_counter()
    timer.start()
    with pytest.raises(Cancelled):
        drain(segment(model, config, image, stop=stop, tile_size=2048))
    stopped = time.perf_counter() - start
    timer.join()
    assert whole > 0.9 and stopped < 0.3 + whole / 2, (whole, stopped)
    maps = drain(predict_maps(model, config, image[:64, :64]))
    assert maps.shape == (2, 64, 64)


def test_backend_choice(monkeypatch):
    monkeypatch.delenv(BACKEND_VARIABLE, raising=False)
    assert backend(CPU) == "onnxruntime-int8"  # installed with the package: the CPU's default
    assert backend(torch.device("cuda")) == "torch"  # a GPU runs PyTorch, whatever is asked
    monkeypatch.setenv(BACKEND_VARIABLE, "torch")
    assert backend(CPU) == "torch"
    monkeypatch.setenv(BACKEND_VARIABLE, "onnxruntime-int8")
    assert backend(CPU) == "onnxruntime-int8"
    assert backend(torch.device("cuda")) == "torch"
    monkeypatch.setenv(BACKEND_VARIABLE, "tensorflow")
    with pytest.raises(ValueError, match="NUCLEISEG_BACKEND='tensorflow': choose from auto"):
        backend(CPU)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # a platform without its wheels
    monkeypatch.setenv(BACKEND_VARIABLE, "auto")
    assert backend(CPU) == "torch"
    for engine in ("onnxruntime", "onnxruntime-int8"):
        monkeypatch.setenv(BACKEND_VARIABLE, engine)
        with pytest.raises(ValueError, match="pip install onnxruntime onnx"):
            backend(CPU)


def test_training_validates_in_float_in_its_own_thread_only(monkeypatch):
    """``exact`` turns "auto" into float for its thread: training's validation (``evaluate``,
    the Train dock's and the CLI's) never runs int8, while a Segment run elsewhere keeps it."""
    from napari_nucleiseg import runner as runner_module
    from napari_nucleiseg.training import evaluate

    monkeypatch.delenv(BACKEND_VARIABLE, raising=False)
    seen = []
    with exact():
        assert backend(CPU) == "onnxruntime"
        thread = threading.Thread(target=lambda: seen.append(backend(CPU)))
        thread.start()
        thread.join()
        monkeypatch.setenv(BACKEND_VARIABLE, "onnxruntime-int8")  # asked for: kept
        assert backend(CPU) == "onnxruntime-int8"
        monkeypatch.delenv(BACKEND_VARIABLE)
    assert seen == ["onnxruntime-int8"] and backend(CPU) == "onnxruntime-int8"

    def no_int8(*args):
        raise AssertionError("validation ran in int8")

    monkeypatch.setattr(runner_module, "_int8", no_int8)
    model, config = load_model("dsb2018-unet")
    sample = read_sample(sample_folder("fluorescence"))
    assert evaluate(model, config, [sample], "cpu").score > 0.3


@pytest.mark.parametrize("kind", ["fluorescence", "histology"])
def test_backends_give_the_same_maps_and_labels_on_real_images(monkeypatch, kind):
    model, config = load_model("dsb2018-unet")
    image = read_sample(sample_folder(kind)).image
    runs = {}
    for engine in ("torch", "onnxruntime"):
        monkeypatch.setenv(BACKEND_VARIABLE, engine)
        runs[engine] = drain(segment(model, config, image, tile_size=256))
    (maps_t, labels_t), (maps_o, labels_o) = runs["torch"], runs["onnxruntime"]
    assert labels_t.max() > 20
    assert np.abs(maps_t - maps_o).max() < 1e-4
    assert np.array_equal(labels_t, labels_o)


def test_int8_is_the_same_on_every_build_and_tiled_as_whole_and_near_float(monkeypatch):
    """int8's ranges come from the shipped samples, not from the image: the maps of a model
    are the same on every run, and its tiles give the whole image's maps exactly."""
    model, config = load_model("dsb2018-unet")
    image = read_sample(sample_folder("fluorescence")).image
    monkeypatch.setenv(BACKEND_VARIABLE, "onnxruntime-int8")
    whole = drain(predict_maps(model, config, image))
    assert np.array_equal(drain(predict_maps(model, config, image, tile_size=208)), whole)
    _RUNNERS.clear()
    assert np.array_equal(drain(predict_maps(model, config, image)), whole)
    monkeypatch.setenv(BACKEND_VARIABLE, "onnxruntime")
    exact = drain(predict_maps(model, config, image))
    assert 0 < np.abs(whole - exact).mean() < 0.01  # int8 indeed, and close
    labels = {}
    for engine in ("onnxruntime", "onnxruntime-int8"):
        monkeypatch.setenv(BACKEND_VARIABLE, engine)
        labels[engine] = drain(segment(model, config, image))[1][0]
    agreement = score_image(labels["onnxruntime"], labels["onnxruntime-int8"]).ap.mean()
    assert agreement > 0.9, agreement


def test_cli_backend_option_and_a_bad_choice_in_one_line(tmp_path):
    folder = sample_folder("fluorescence").parent
    cli = [sys.executable, "-m", "napari_nucleiseg.cli", "predict", str(folder)]
    done = subprocess.run(
        [*cli, "-o", str(tmp_path / "torch"), "--backend", "torch"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "torch").glob("*.tif"))) == 2
    env = {**os.environ, BACKEND_VARIABLE: "tensorflow"}
    bad = subprocess.run(
        [*cli, "-o", str(tmp_path / "bad")], capture_output=True, text=True, env=env
    )
    assert bad.returncode != 0
    assert (
        bad.stderr.strip()
        .splitlines()[-1]
        .endswith(
            "NUCLEISEG_BACKEND='tensorflow': choose from auto, torch, onnxruntime, onnxruntime-int8"
        )
    )
    assert not (tmp_path / "bad").exists()  # refused before anything was written


def test_a_model_built_under_inference_mode_runs():
    """Its tensors have no version counter to key the cache on."""
    config = ModelConfig("unet", {"depth": 2, "base": 4})
    with torch.inference_mode():
        model = config.build().eval()
        x = torch.rand(1, 1, 32, 32)
        assert runner(model, CPU)(x).shape == (1, 2, 32, 32)


def test_rows_outside_the_image_are_refused():
    from napari_nucleiseg.inference import predict_into
    from napari_nucleiseg.preprocess import scaling

    model, config = load_model("dsb2018-unet")
    image = read_sample(sample_folder("fluorescence")).image
    out = np.zeros((model.out_channels, *image.shape[:2]), np.float32)
    for rows in [(10, 5), (-1, 5), (0, image.shape[0] + 1)]:
        with pytest.raises(ValueError, match="not within the image"):
            drain(predict_into(model, scaling(image, config), image, out, rows=rows))
