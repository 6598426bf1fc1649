"""The npe2 reader and sample data in a real napari viewer (needs a display: run under xvfb-run)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from napari_nucleiseg._napari.reader import (
    SampleIdOverlay,
    current_sample_id,
    get_reader,
    read_sample_layers,
    text_overlay,
)
from napari_nucleiseg.io import list_samples, read_sample
from napari_nucleiseg.samples import sample_folder


def test_get_reader_declines_what_is_not_stage1(tmp_path):
    png = tmp_path / "plain.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(png)
    assert get_reader(str(png)) is None
    assert get_reader(str(tmp_path / "missing")) is None
    assert get_reader(str(tmp_path)) is None  # a folder with no sample folder
    assert get_reader([str(sample_folder("histology")), str(png)]) is None


def test_sample_layers_carry_mask_names():
    folder = sample_folder("histology")
    (image, image_kw, image_type), (labels, labels_kw, labels_type) = read_sample_layers(
        str(folder)
    )
    assert (image_type, labels_type) == ("image", "labels")
    assert image.shape == (256, 320, 3) and image_kw["rgb"]
    assert labels_kw["name"] == f"{folder.name} masks"
    names = labels_kw["metadata"]["mask_names"]
    assert len(names) == 37 and all((folder / "masks" / n).is_file() for n in names.values())


def test_open_sample_folder_in_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    folder = sample_folder("fluorescence")
    layers = viewer.open(folder, plugin="napari-nucleiseg")
    assert [type(layer).__name__ for layer in layers] == ["Image", "Labels"]
    np.testing.assert_array_equal(layers[1].data, read_sample(folder).labels)
    assert layers[1].metadata["sample_id"] == folder.name


def test_open_root_and_move_the_slider(make_napari_viewer, small_root):
    viewer = make_napari_viewer()
    image, labels = viewer.open(small_root, plugin="napari-nucleiseg")
    folders = list_samples(small_root)
    assert image.data.shape == (3, 256, 320, 3) and labels.data.shape == (3, 256, 320)
    for index in (2, 0, 1):
        viewer.dims.set_current_step(0, index)
        sample = read_sample(folders[index])
        h, w = sample.labels.shape
        shown_image = np.asarray(image._slice.image.raw)
        shown_labels = np.asarray(labels._slice.image.raw)
        # the layers follow the slider and stay aligned with each other (top-left corner)
        np.testing.assert_array_equal(shown_labels[:h, :w], sample.labels)
        assert not shown_labels[h:, :].any() and not shown_labels[:, w:].any()
        expected = sample.image if sample.image.ndim == 3 else np.stack([sample.image] * 3, -1)
        np.testing.assert_array_equal(shown_image[:h, :w], expected)
        assert folders[index].name in text_overlay(viewer).text
        assert current_sample_id(viewer).startswith(folders[index].name)


def test_the_sample_id_follows_each_viewer_connected_once(make_napari_viewer, small_root):
    """Two roots in one viewer connect one overlay updater; another viewer gets its own."""
    first = make_napari_viewer()  # napari's current viewer: the one a reader shows ids in
    first.open(small_root, plugin="napari-nucleiseg")
    first.open(small_root, plugin="napari-nucleiseg")
    second = make_napari_viewer()  # the newest viewer is the current one
    second.open(small_root, plugin="napari-nucleiseg")
    for viewer in (first, second):
        connected = [c for c in viewer.dims.events.current_step.callbacks
                     if isinstance(c, SampleIdOverlay)]  # fmt: skip
        assert len(connected) == 1
    first.dims.set_current_step(0, 0)
    second.dims.set_current_step(0, 2)  # each viewer's own slider, each its own overlay
    names = [folder.name for folder in list_samples(small_root)]
    assert text_overlay(first).text.startswith(names[0])
    assert text_overlay(second).text.startswith(names[2])


def test_sample_data_opens_image_and_truth(make_napari_viewer):
    viewer = make_napari_viewer()
    for key, n in (("fluorescence", 57), ("histology", 37)):
        layers = viewer.open_sample("napari-nucleiseg", key)
        assert [type(layer).__name__ for layer in layers] == ["Image", "Labels"]
        assert layers[1].data.max() == n


@pytest.mark.slow
def test_open_the_670_sample_root_lazily(shared_data, make_napari_viewer):
    # shared_data first: its skip must come before napari's viewer fixture is set up
    viewer = make_napari_viewer()
    start = time.perf_counter()
    image, labels = viewer.open(shared_data / "stage1_train", plugin="napari-nucleiseg")
    opened = time.perf_counter() - start
    assert image.data.shape[:3] == labels.data.shape == (670, 1040, 1388)
    ids = image.metadata["stage1_ids"]
    for index in range(0, 400, 20):
        viewer.dims.set_current_step(0, index)
        assert text_overlay(viewer).text.startswith(ids[index])
    print(f"opened 670 samples in {opened:.1f} s")
