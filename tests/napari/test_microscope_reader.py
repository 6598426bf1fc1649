"""A microscope file opened in napari through the bioio extra: the nuclear channel, with the
pixel size as the layer's scale (issue 17). A real CZI is written with pylibCZIrw."""

from __future__ import annotations

import numpy as np
import pytest

pyczi = pytest.importorskip("pylibCZIrw.czi", reason="bioio-czi (pylibCZIrw) is not installed")


@pytest.fixture
def czi(tmp_path):
    """A two-channel CZI, GFP then DAPI, 0.325 µm pixels."""
    rng = np.random.default_rng(0)
    planes = [rng.integers(0, 255, (40, 50), dtype=np.uint8) for _ in range(2)]
    path = tmp_path / "cells.czi"
    with pyczi.create_czi(str(path), exist_ok=True) as writer:
        for c, plane in enumerate(planes):
            writer.write(data=plane, plane={"C": c, "T": 0, "Z": 0})
        writer.write_metadata(
            document_name="cells", channel_names={0: "GFP", 1: "DAPI"},
            scale_x=0.325e-6, scale_y=0.325e-6,
        )  # fmt: skip
    return path, planes


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
