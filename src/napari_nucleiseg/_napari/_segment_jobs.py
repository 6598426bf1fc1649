"""The work of the segmentation widget, run in ``thread_worker``s: no layer is touched here.

:func:`segment` runs the pipeline over the planes; :func:`relabel` re-runs
only the post-processing on kept maps (a knob moved). Both re-raise any
failure as :class:`SegmentationFailed` with a one-line message, because a
worker silently drops a ``RuntimeError`` (torch's usual error type) instead
of reporting it.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Generator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import pipeline
from ..errors import NucleisegError, one_line
from ..models import ModelConfig
from ..pipeline import Cancelled, Index, Progress, labels_of_planes
from ..postprocess import PostprocessConfig
from ..preprocess import NormalizeConfig
from ._models import get_model

if TYPE_CHECKING:
    from napari.layers import Image, Labels


class SegmentationFailed(NucleisegError):
    """A run failed; the message is one line (napari shows it as a notification)."""


@dataclass
class Request:
    """What a run needs, read from the widgets on the GUI thread."""

    image: Image
    data: object
    planes: list[Index]
    model: str
    device: str
    tile_size: int | None
    tta: bool
    post: PostprocessConfig
    normalization: NormalizeConfig | None = None  # the dock's polarity and channel
    diameter: float | str | None = "auto"  # the nuclei's, in pixels, or estimated
    stop: threading.Event = field(default_factory=threading.Event)


@dataclass
class Result:
    """The kept output of a run: maps for re-thresholding, the labels shown."""

    image: Image
    planes: list[Index]
    config: ModelConfig
    maps: np.ndarray  # (P, M, H, W) float32
    labels: np.ndarray  # (P, H, W)
    model: str = ""  # the model's name or checkpoint path, as chosen
    layer: Labels | None = None
    edited: bool = False


def segment(req: Request) -> Generator[Progress, None, Result | None]:
    """The worker: network, then labels; returns None if cancelled."""
    try:
        # napari imports pandas when it makes the first Labels layer: do it here, off the GUI thread
        importlib.import_module("pandas")
        model, config = get_model(req.model, req.device)
        if req.normalization is not None:
            config = replace(config, normalization=req.normalization)
        maps, labels = yield from pipeline.segment(
            model, config, req.data, req.planes, post=req.post, device=req.device,
            tile_size=req.tile_size, tta=req.tta, stop=req.stop, diameter=req.diameter,
        )  # fmt: skip
    except Cancelled:
        return None
    except Exception as exc:  # a RuntimeError would be swallowed by the worker: re-raise as ours
        raise SegmentationFailed(f"Segmenting {req.image.name!r} failed: {one_line(exc)}") from exc
    return Result(req.image, req.planes, config, maps, labels, model=req.model)


@dataclass
class LargeResult:
    """The output of a run on an image over ``large.LARGE_PIXELS``: labels in Zarr on disk."""

    image: Image
    labels: object  # a Zarr array (H, W), read by napari a tile at a time
    nuclei: int
    model: str


def segment_large_image(
    req: Request, folder: Path
) -> Generator[Progress, None, LargeResult | None]:
    """The worker for an image over ``large.LARGE_PIXELS``: its labels go to Zarr in
    ``folder``, every whole-image array on disk (:func:`~napari_nucleiseg.large.segment_large`);
    returns None if cancelled."""
    from ..large import labels_array, segment_large

    try:
        model, config = get_model(req.model, req.device)
        if req.normalization is not None:
            config = replace(config, normalization=req.normalization)
        labels = labels_array(req.data.shape[:2], folder)
        nuclei = yield from segment_large(
            model, config, req.data, labels, post=req.post, device=req.device,
            tile_size=req.tile_size, tta=req.tta, stop=req.stop, diameter=req.diameter,
            scratch=folder,
        )  # fmt: skip
    except Cancelled:
        return None
    except Exception as exc:
        raise SegmentationFailed(f"Segmenting {req.image.name!r} failed: {one_line(exc)}") from exc
    return LargeResult(req.image, labels, nuclei, req.model)


def relabel(maps: np.ndarray, config: ModelConfig, post: PostprocessConfig):
    """The worker of a knob move: post-processing only, on the kept maps; returns labels."""
    try:
        return (yield from labels_of_planes(maps, config, post))
    except Exception as exc:
        raise SegmentationFailed(f"Post-processing failed: {one_line(exc)}") from exc
