"""A layer too large for memory in the Segment dock (needs a display: run under xvfb-run):
segmented in bounded memory into a lazy, multiscale Labels layer."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from conftest import judged, open_dock, small_sample_folders
from napari_nucleiseg import large
from napari_nucleiseg.inference import drain
from napari_nucleiseg.io import read_sample
from napari_nucleiseg.models import DEFAULT_MODEL, load_model, shipped_models
from napari_nucleiseg.pipeline import segment
from napari_nucleiseg.stitch import canonical

WAIT_MS = 120_000


def wide_image() -> np.ndarray:
    """A 600x1500 grey mosaic of the real samples."""
    tiles = []
    for folder in small_sample_folders():
        image = read_sample(folder).image[..., :3].mean(axis=-1).astype(np.uint8)
        tiles.append(image[:256, :256])
    row = np.concatenate([tiles[k % len(tiles)] for k in range(6)], axis=1)[:, :1500]
    return np.concatenate([row, row[::-1], row], axis=0)[:600]


def test_a_large_lazy_layer_gives_a_lazy_multiscale_labels_layer(
    make_napari_viewer, qtbot, monkeypatch
):
    if DEFAULT_MODEL not in shipped_models():
        pytest.skip(f"no shipped weights yet (weights/{DEFAULT_MODEL}.pt is missing)")
    monkeypatch.setattr(large, "LARGE_PIXELS", 100_000)  # this 900,000-pixel image is large
    image = wide_image()
    viewer = make_napari_viewer()
    viewer.add_image(da.from_array(image, chunks=(256, 256)), name="slide", scale=(0.5, 0.5))
    widget = open_dock(viewer, "Segment nuclei")
    assert judged(qtbot, widget) == DEFAULT_MODEL  # 'auto', for this grey image
    widget._device.value = "cpu"
    widget.run()
    assert widget._worker is not None
    qtbot.waitUntil(lambda: widget._worker is None, timeout=WAIT_MS)
    layer = viewer.layers["slide nuclei"]
    assert layer.multiscale and len(layer.data) == 2  # 600x1500 and 300x750
    assert list(layer.scale) == [0.5, 0.5]
    model, config = load_model(DEFAULT_MODEL)
    _, (expected,) = drain(segment(model, config, image, post=widget._post(), diameter="auto"))
    np.testing.assert_array_equal(np.asarray(layer.data[0]), canonical(expected))
    np.testing.assert_array_equal(np.asarray(layer.data[1]), canonical(expected)[::2, ::2])
    assert f"<b>{int(expected.max())}</b> nuclei found" in widget._status.value
    assert "on disk" in widget._status.value
    assert f"found</big> by {DEFAULT_MODEL} (auto)" in widget._status.value
    widget._prob.value = 0.7  # no maps were kept: a knob re-runs nothing and fails nothing
    assert widget._relabel_worker is None
    first = widget._large_folders["slide nuclei"]
    assert first.is_dir()
    widget.run()  # a second run replaces the layer, and the first labels on disk go
    qtbot.waitUntil(lambda: widget._worker is None, timeout=WAIT_MS)
    assert not first.exists() and widget._large_folders["slide nuclei"].is_dir()
    assert len([layer for layer in viewer.layers if layer.name == "slide nuclei"]) == 1
