"""A microscope file opened in napari through the bioio extra: the nuclear channel, with the
pixel size as the layer's scale (issue 17). A real CZI is written with pylibCZIrw."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import write_czi


@pytest.fixture
def czi(tmp_path):
    """A two-channel CZI, GFP then DAPI, 0.325 µm pixels."""
    from napari_nucleiseg.io import read_sample
    from napari_nucleiseg.samples import sample_folder

    real = read_sample(sample_folder("fluorescence")).image  # real nuclei in the DAPI channel
    dapi = (real if real.ndim == 2 else real[..., 0])[:128, :160].astype(np.uint8)
    rng = np.random.default_rng(0)
    planes = [rng.integers(0, 255, dapi.shape, dtype=np.uint8), dapi]
    return write_czi(tmp_path / "cells.czi", planes), planes


def test_viewer_opens_the_nuclear_channel_in_micrometres(make_napari_viewer, czi):
    path, planes = czi
    viewer = make_napari_viewer()
    (layer,) = viewer.open(path, plugin="napari-nucleiseg")
    np.testing.assert_array_equal(layer.data, planes[1])  # DAPI, not the first channel
    assert layer.name == "cells DAPI"
    np.testing.assert_allclose(layer.scale, (0.325, 0.325))
    assert [str(u) for u in layer.units] == ["micrometer", "micrometer"]


def test_napari_offers_our_reader_for_microscope_files(czi):
    from npe2 import PluginManager

    path, _ = czi
    readers = [r.plugin_name for r in PluginManager.instance().iter_compatible_readers([str(path)])]
    assert "napari-nucleiseg" in readers


def test_without_bioio_the_file_is_left_to_other_readers(czi, monkeypatch):
    import importlib.util

    from napari_nucleiseg._napari.reader import get_reader

    path, _ = czi
    assert get_reader(str(path)) is not None
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bioio" else real(name, *a)
    )
    assert get_reader(str(path)) is None  # another plugin's CZI reader gets its turn


def test_predict_measures_every_channel_of_a_czi(czi, tmp_path, tiny_checkpoint):
    """The network sees DAPI; the table has both channels, the marker's too."""
    import csv

    from napari_nucleiseg.cli import main
    from napari_nucleiseg.io.images import read_label_image

    path, planes = czi
    out = tmp_path / "out"
    assert (
        main(["predict", str(path), "-o", str(out), "--model", str(tiny_checkpoint), "--measure"])
        == 0
    )
    with open(out / "measurements.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    labels = read_label_image(out / "cells.tif")
    assert len(rows) == len(np.unique(labels)) - 1 >= 5  # the nuclei of the real crop
    for row in rows:
        mask = labels == int(row["label"])
        for c in (0, 1):
            assert float(row[f"mean_intensity_ch{c}"]) == pytest.approx(planes[c][mask].mean())
    assert "area_um2" in rows[0]  # the CZI's own pixel size
