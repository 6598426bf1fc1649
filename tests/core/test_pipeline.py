"""The pipeline: planes, progress, the stop switch, and the fallback after GPU out-of-memory."""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_nucleiseg import pipeline
from napari_nucleiseg.inference import drain, predict_maps
from napari_nucleiseg.io import read_sample
from napari_nucleiseg.models import ModelConfig
from napari_nucleiseg.pipeline import (
    Cancelled,
    DeviceFallbackWarning,
    Progress,
    labels_from_predicted,
    labels_of_planes,
    leading_shape,
    plane_indices,
    predict_with_fallback,
    segment,
)
from napari_nucleiseg.samples import sample_folder


@pytest.fixture(scope="module")
def model_and_config():
    torch.manual_seed(0)
    config = ModelConfig("unet", {"depth": 2, "base": 4})
    return config.build().eval(), config


def test_planes_of_shapes():
    assert leading_shape((64, 64), rgb=False) == ()
    assert leading_shape((64, 64, 3), rgb=True) == ()
    assert leading_shape((2, 3, 64, 64, 4), rgb=True) == (2, 3)
    assert plane_indices(()) == [()]
    assert plane_indices((2, 3)) == [(i, j) for i in range(2) for j in range(3)]
    with pytest.raises(ValueError, match="no \\(H, W\\) plane"):
        leading_shape((64, 3), rgb=True)


def test_segment_is_predict_maps_and_labels_per_plane(model_and_config):
    model, config = model_and_config
    rng = np.random.default_rng(0)
    image = rng.integers(0, 4000, (2, 3, 40, 48), dtype=np.uint16)
    image[..., 10:20, 12:24] += 20_000  # structure, not noise alone (noise gives no nuclei)
    planes = [(0, 1), (1, 2)]
    post = replace(config.postprocess, prob_threshold=0.3)
    steps = []
    maps, labels = drain(segment(model, config, image, planes, post=post), steps.append)
    assert maps.shape == (2, 2, 40, 48) and maps.dtype == np.float32
    assert labels.shape == (2, 40, 48)
    for got, got_labels, index in zip(maps, labels, planes):
        np.testing.assert_allclose(got, drain(predict_maps(model, config, image[index])), atol=1e-6)
        np.testing.assert_array_equal(got_labels, labels_from_predicted(got, config, post))
    assert all(isinstance(s, Progress) for s in steps)
    assert [s.text for s in steps] == [
        "plane 1/2, tile 1/1", "plane 2/2, tile 1/1",
        "plane 1/2, post-processing", "plane 2/2, post-processing",
    ]  # fmt: skip
    assert [s.fraction for s in steps] == sorted(s.fraction for s in steps)
    assert steps[1].fraction == pytest.approx(pipeline.NETWORK_SHARE) and steps[-1].fraction == 1
    # re-thresholding kept maps runs only the post-processing
    again = drain(labels_of_planes(maps, config, post))
    np.testing.assert_array_equal(again, labels)


def test_segment_a_2d_image(model_and_config):
    model, config = model_and_config
    image = read_sample(sample_folder("histology")).image  # 256x320 RGB
    steps = []
    maps, labels = drain(segment(model, config, image), steps.append)
    assert maps.shape == (1, 2, 256, 320) and labels.shape == (1, 256, 320)
    assert labels.dtype == np.uint16
    assert [s.text for s in steps] == ["tile 1/1", "post-processing"]
    none = drain(labels_of_planes(maps, config, replace(config.postprocess, prob_threshold=1.0)))
    assert none.max() == 0


def test_stop_between_planes_and_in_post_processing(model_and_config):
    model, config = model_and_config
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        drain(segment(model, config, np.zeros((3, 32, 32)), [(0,), (1,)], stop=stop))
    with pytest.raises(Cancelled):
        drain(labels_of_planes(np.zeros((1, 2, 32, 32), np.float32), config, stop=stop))


def _fake_predict(limit: int, calls: list):
    """predict_maps that runs out of memory on tiles larger than ``limit`` (None: always)."""

    def fake(model, config, image, *, device, tile_size, batch_size, tta):
        calls.append((device.type, tile_size, batch_size))
        side = tile_size or max(image.shape[:2])
        if device.type != "cpu" and (limit is None or side > limit):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        yield 1, 1
        return np.zeros((2, *image.shape[:2]), np.float32)

    return fake


def test_out_of_memory_falls_back_to_smaller_tiles(monkeypatch):
    calls = []
    monkeypatch.setattr(pipeline, "predict_maps", _fake_predict(600, calls))
    image = np.zeros((1200, 1000), np.uint8)
    with pytest.warns(DeviceFallbackWarning, match="600-pixel tiles"):
        maps, device, tile = drain(
            predict_with_fallback(None, None, image, device=torch.device("cuda"))
        )
    assert calls == [("cuda", None, 4), ("cuda", 600, 1)]
    assert device.type == "cuda" and tile == 600 and maps.shape == (2, 1200, 1000)


def test_out_of_memory_falls_back_to_the_cpu(monkeypatch):
    calls = []
    monkeypatch.setattr(pipeline, "predict_maps", _fake_predict(None, calls))
    image = np.zeros((1024, 1024), np.uint8)
    with pytest.warns(DeviceFallbackWarning) as caught:
        maps, device, tile = drain(
            predict_with_fallback(None, None, image, device=torch.device("cuda"))
        )
    assert [c[:2] for c in calls] == [("cuda", None), ("cuda", 512), ("cuda", 256), ("cpu", None)]
    assert "CPU" in str(caught[-1].message) and device.type == "cpu" and tile is None


def test_out_of_memory_on_the_cpu_is_raised(monkeypatch):
    def oom(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: not enough memory: out of memory")
        yield

    monkeypatch.setattr(pipeline, "predict_maps", oom)
    with pytest.raises(RuntimeError, match="not enough memory"):
        drain(predict_with_fallback(None, None, np.zeros((8, 8)), device=torch.device("cpu")))


def test_pipeline_imports_without_napari_or_qt():
    import subprocess
    import sys

    code = (
        "import sys, napari_nucleiseg.pipeline\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'magicgui', 'vispy')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
