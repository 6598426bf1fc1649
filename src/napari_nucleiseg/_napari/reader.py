"""npe2 reader for DSB2018 stage-1 folders and microscope files.

A sample folder opens as an image and a Labels layer; a root (a folder of
sample folders) opens as two lazy stacks under the dims slider, padded to the
largest image, where only the samples on screen are decoded. A microscope file
(CZI, ND2, LIF ... through the bioio extra) opens as its nuclear channel, with
its pixel size as the layer's scale in µm, so that measurements come in µm.
"""

from __future__ import annotations

import importlib.util
import weakref
from collections.abc import Callable
from pathlib import Path

from ..io import stage1
from ..io.lazy import root_stacks
from ..io.microscope import MICROSCOPE_SUFFIXES, read_microscope_file
from . import _metadata as meta

LayerData = tuple  # (data, kwargs, layer_type)


def get_reader(path: str | list[str]) -> Callable[[str], list[LayerData]] | None:
    """Return a reader for a stage-1 sample folder or root, else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    if p.suffix.lower() in MICROSCOPE_SUFFIXES and p.is_file():
        # without bioio, leave the file to another reader plugin
        return read_microscope_layers if importlib.util.find_spec("bioio") else None
    if stage1.is_sample_folder(p):
        return read_sample_layers
    if stage1.is_stage1_root(p):
        return read_root_layers
    return None


def sample_layers(sample: stage1.Sample) -> list[LayerData]:
    """Image and Labels layer data of one sample; the labels carry the mask file names."""
    record = {meta.SAMPLE_ID: sample.id, meta.SOURCE: str(sample.path)}
    layers: list[LayerData] = [
        (
            sample.image,
            {"name": sample.id, "metadata": dict(record), "rgb": sample.image.ndim == 3},
            "image",
        )
    ]
    if sample.labels is not None:
        record[meta.MASK_NAMES] = dict(sample.mask_names)
        layers.append((sample.labels, {"name": f"{sample.id} masks", "metadata": record}, "labels"))
    return layers


def read_microscope_layers(path: str) -> list[LayerData]:
    """Read the nuclear channel of a microscope file, its pixel size as scale (µm)."""
    plane = read_microscope_file(path)
    kwargs = {
        "name": Path(path).stem if plane.channel is None else f"{Path(path).stem} {plane.channel}",
        "metadata": {meta.SOURCE: str(path)},
        "rgb": plane.data.ndim == 3,
    }
    if plane.pixel_size is not None:
        kwargs.update(scale=plane.pixel_size, units=("µm", "µm"))
    return [(plane.data, kwargs, "image")]


def read_sample_layers(path: str) -> list[LayerData]:
    """Read one sample folder into an image and a Labels layer."""
    return sample_layers(stage1.read_sample(path))


def read_root_layers(path: str) -> list[LayerData]:
    """Read a stage-1 root as lazy image and label stacks, one sample per slider step."""
    infos, images, labels = root_stacks(path)
    ids = [i.id for i in infos]
    root = Path(path)
    record = {meta.STAGE1_IDS: ids, meta.SOURCE: str(root)}
    common = {"metadata": record, "multiscale": False, "axis_labels": ("sample", "y", "x")}
    layers: list[LayerData] = [
        (
            images,
            {
                "name": root.name or str(root),
                "rgb": images.ndim == 4,
                "contrast_limits": (0, 255),
                **common,
            },
            "image",
        )
    ]
    if labels is not None:
        layers.append((labels, {"name": f"{root.name} masks", **common}, "labels"))
    viewer = _current_viewer()
    if viewer is not None:
        SampleIdOverlay(viewer).connect()
    return layers


def _current_viewer():
    """The viewer opening the file: an npe2 reader is handed none."""
    try:
        import napari

        return napari.current_viewer()
    except Exception:  # no viewer (e.g. reading from a script)
        return None


def current_sample_id(viewer) -> str | None:
    """The id of the sample on screen in the first layer read from a stage-1 root."""
    for layer in viewer.layers:
        ids = layer.metadata.get(meta.STAGE1_IDS)
        if ids:
            index = int(round(layer.world_to_data(viewer.dims.point)[0]))
            index = min(max(index, 0), len(ids) - 1)
            return f"{ids[index]}  ({index + 1}/{len(ids)})"
    return None


def text_overlay(viewer):
    """The viewer's text overlay (``viewer.canvas.overlays.text`` since napari 0.9)."""
    canvas = getattr(viewer, "canvas", None)
    overlays = getattr(canvas, "overlays", None)
    return overlays.text if overlays is not None else viewer.text_overlay


class SampleIdOverlay:
    """Keeps a viewer's text overlay on the id of the sample on screen.

    Connected to the viewer's own events, it holds the viewer weakly. Two of them
    for one viewer are equal, and napari's event emitters skip a callback equal to
    one they hold: a second root opened in the viewer connects nothing more, with
    no registry of viewers kept here.
    """

    def __init__(self, viewer):
        self._viewer = weakref.ref(viewer)
        self._hash = hash(self._viewer)

    def __eq__(self, other) -> bool:
        if not isinstance(other, SampleIdOverlay):
            return NotImplemented
        return self._viewer == other._viewer

    def __hash__(self) -> int:
        return self._hash

    def connect(self) -> None:
        """Follow the slider and the layers coming and going."""
        viewer = self._viewer()
        for emitter in (
            viewer.dims.events.current_step,
            viewer.layers.events.inserted,
            viewer.layers.events.removed,
        ):
            emitter.connect(self)

    def __call__(self, event=None) -> None:
        viewer = self._viewer()
        if viewer is None:
            return
        text = current_sample_id(viewer)
        overlay = text_overlay(viewer)
        overlay.visible = text is not None
        overlay.text = text or ""
