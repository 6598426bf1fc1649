"""The one segmentation pipeline: image (or stack of planes) -> maps -> instance labels.

The command line, the Segment dock, the benchmarks and (next) Dask workers all
call :func:`segment`, a generator that yields a :class:`Progress` after every
batch of tiles and every plane's post-processing and returns the maps and the
labels; :func:`~napari_nucleiseg.inference.drain` runs it in a script. A GPU
out-of-memory error retries the plane with smaller tiles, then on the CPU, and
says so with a :class:`DeviceFallbackWarning`. Setting the ``stop`` event (from
any thread) raises :class:`Cancelled` within one layer of the network.
:func:`labels_of_planes` re-runs only the post-processing on kept maps.
"""

from __future__ import annotations

import itertools
import threading
import warnings
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch

from . import scale
from .devices import resolve_device
from .inference import drain, model_device, predict_maps, tile_side
from .postprocess import PostprocessConfig, labels_from_maps
from .runner import Cancelled as Cancelled  # where callers have always found it
from .runner import check_stop, stop_switch
from .scale import median_diameter, resize_image, resize_maps

if TYPE_CHECKING:
    from .models import ModelConfig, SegmentationModel

#: smallest tile tried after a GPU out-of-memory error, before moving to the CPU
MIN_FALLBACK_TILE = 256
#: share of the progress bar taken by the network (post-processing takes the rest)
NETWORK_SHARE = 0.9

Index = tuple[int, ...]
T = TypeVar("T")
Y = TypeVar("Y")


class DeviceFallbackWarning(UserWarning):
    """The GPU ran out of memory; the run went on with smaller tiles or on the CPU."""


@dataclass(frozen=True)
class Progress:
    """How far a run is: the fraction done overall, in [0, 1], and what it is doing."""

    fraction: float
    text: str


def leading_shape(shape: Sequence[int], rgb: bool) -> tuple[int, ...]:
    """The leading (non-spatial) dimensions of an image of ``shape``.

    Parameters
    ----------
    shape : sequence of int
        ``(..., H, W)`` or, with ``rgb``, ``(..., H, W, C)``.
    rgb : bool
        Whether the last axis holds colour channels.

    Raises
    ------
    ValueError
        Fewer than two spatial dimensions.
    """
    spatial = len(shape) - (1 if rgb else 0)
    if spatial < 2:
        raise ValueError(f"image of shape {tuple(shape)} has no (H, W) plane")
    return tuple(int(n) for n in shape[: spatial - 2])


def plane_indices(lead: Sequence[int]) -> list[Index]:
    """Every index over the leading dimensions ``lead``, in C order (``[()]`` for a 2-D image)."""
    return list(itertools.product(*(range(n) for n in lead)))


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a GPU (CUDA or MPS) out-of-memory error."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def relay(
    gen: Generator[Y, None, T], step: Callable[[Y], Progress]
) -> Generator[Progress, None, T]:
    """Re-yield ``step(item)`` for every item of ``gen``; return ``gen``'s value."""
    while True:
        try:
            item = next(gen)
        except StopIteration as end:
            return end.value
        yield step(item)


def predict_with_fallback(
    model: SegmentationModel,
    config: ModelConfig,
    image: np.ndarray,
    *,
    device: torch.device,
    tile_size: int | None = None,
    tta: bool = False,
    batch_size: int = 4,
) -> Generator[tuple[int, int], None, tuple[np.ndarray, torch.device, int | None]]:
    """:func:`~napari_nucleiseg.inference.predict_maps`, retried after GPU out-of-memory errors.

    Retries with half the tile side (and one tile per batch) down to
    ``MIN_FALLBACK_TILE``, then on the CPU with the original tile size,
    warning with :class:`DeviceFallbackWarning` each time.

    Yields
    ------
    (done, total) : (int, int)
        As ``predict_maps``; a retry starts again from 0.

    Returns
    -------
    maps : (M, H, W) ndarray of float32
    device : torch.device
        The device that succeeded (keep it for the next planes).
    tile_size : int or None
        The tile size that succeeded.

    Raises
    ------
    RuntimeError
        Out of memory on the CPU, or any other error of the network.
    """
    tile, batch = tile_size, batch_size
    while True:
        try:
            maps = yield from predict_maps(
                model, config, image, device=device, tile_size=tile, batch_size=batch, tta=tta
            )
            return maps, device, tile
        except Exception as exc:
            if not is_out_of_memory(exc) or device.type == "cpu":
                raise
        if device.type == "cuda":
            torch.cuda.empty_cache()
        elif device.type == "mps":
            torch.mps.empty_cache()
        side = tile_side(*image.shape[:2], tile) // 2
        if side >= MIN_FALLBACK_TILE:
            tile, batch = side, 1
            note = f"{device.type.upper()} ran out of memory; retrying with {side}-pixel tiles"
        else:
            device, tile, batch = torch.device("cpu"), tile_size, batch_size
            note = "GPU ran out of memory even with small tiles; running on the CPU instead"
        warnings.warn(note, DeviceFallbackWarning, stacklevel=2)


def labels_from_predicted(
    maps: np.ndarray, config: ModelConfig, post: PostprocessConfig | None = None
) -> np.ndarray:
    """Instance labels of one plane's maps: every map after the body (border, contour) separates.

    Parameters
    ----------
    maps : (M, H, W) ndarray of float32
        :func:`~napari_nucleiseg.inference.predict_maps` output, in the order of ``config.maps``.
    config : ModelConfig
    post : PostprocessConfig, optional
        Thresholds; None: ``config.postprocess``.

    Returns
    -------
    (H, W) ndarray of uint16 or uint32
    """
    return labels_from_maps(maps[0], maps[1:].max(axis=0), post or config.postprocess)


def plane_maps(
    model: SegmentationModel,
    config: ModelConfig,
    raw: np.ndarray,
    *,
    diameter: float | str | None,
    post: PostprocessConfig | None,
    device: torch.device,
    tile_size: int | None,
    tta: bool,
) -> Generator[tuple[int, int] | str, None, tuple[np.ndarray, torch.device, int | None]]:
    """One plane's maps at the image's resolution, the image resized for the network so
    that its nuclei are as wide as the model was trained to see (:mod:`napari_nucleiseg.scale`).

    ``diameter``: the image's nucleus diameter in pixels; "auto" estimates it
    (:func:`_estimate`; the look at the image's own scale is kept when no resizing is
    needed); None: no resizing. Yields the network's (done, total) steps, and with
    "auto" a line saying how the image was resized.
    """
    factor = 1.0
    if diameter == "auto":
        found, maps, device, tile_size = yield from _estimate(
            model, config, raw, post=post, device=device, tile_size=tile_size, tta=tta
        )
        if found is None:  # then the look at full size was made: its maps
            return maps, device, tile_size
        factor = scale.target_factor(found, config)
        yield f"nuclei about {found:.0f} px across: " + (
            "not resized" if factor == 1.0 else f"resized {factor:.2f}x"
        )
        if factor == 1.0 and maps is not None:
            return maps, device, tile_size
    elif diameter is not None:
        factor = scale.target_factor(diameter, config)
    image = raw if factor == 1.0 else resize_image(raw, factor)
    maps, device, tile_size = yield from predict_with_fallback(
        model, config, image, device=device, tile_size=tile_size, tta=tta
    )
    return resize_maps(maps, raw.shape[:2]), device, tile_size


def _estimate(model, config, raw, *, post, device, tile_size, tta):
    """The nuclei's median diameter at the image's own scale (None: none found), and the maps
    of the image at its own scale when they were computed (None otherwise).

    A network splits nuclei far larger than it was trained on into pieces, so a look at
    the image's own scale underestimates them; and at a coarse scale, small nuclei close
    together merge into blobs that look large. A coarse look of :data:`scale.ESTIMATE_SCALES`
    (coarsest first) is trusted when its nuclei are at least ``scale.MIN_SEEN`` of the
    model's diameter and a look at half its scale finds them as large (within
    ``scale.AGREEMENT``): blobs of merged nuclei grow as the scale coarsens, nuclei do
    not. Else the look at full size decides. Each scale is looked at once at most; the
    coarse looks together cost under a third of the full one.

    In a coarse look every object counts, however unsure the network is of it
    (``min_mean_prob`` is not applied): there the small nuclei are the unsure ones, and
    dropping them left the merged blobs to set the size (an image of 20-px nuclei was shrunk
    0.38x). The look at full size counts the nuclei the labels keep (every object when it
    keeps none): there the unsure objects are fragments and texture, and counting them
    halved the estimate on H&E tissue (13 px for nuclei of 26 px), so the image was enlarged
    where it should have been shrunk.
    """
    looks: dict[float, tuple[float | None, tuple | None]] = {}
    kept = post or config.postprocess
    every = replace(kept, min_mean_prob=0.0)

    def look(s: float):
        if s not in looks:
            image = raw if s == 1 else resize_image(raw, s)
            if s != 1 and min(image.shape[:2]) < scale.MIN_ESTIMATE_SIDE:
                looks[s] = None, None
            else:
                run = yield from predict_with_fallback(
                    model, config, image, device=device, tile_size=tile_size, tta=tta
                )
                seen = None
                if s == 1:  # the nuclei the labels will hold
                    seen = median_diameter(labels_from_predicted(run[0], config, kept))
                if seen is None:
                    seen = median_diameter(labels_from_predicted(run[0], config, every))
                looks[s] = (None if seen is None else seen / s), run
        return looks[s]

    for s in scale.ESTIMATE_SCALES[:-1]:
        found, _ = yield from look(s)
        if found is None or found * s < scale.MIN_SEEN * config.nucleus_diameter:
            continue
        coarser, _ = yield from look(s / 2)
        if coarser is not None and abs(np.log(coarser / found)) <= np.log(scale.AGREEMENT):
            return found, None, device, tile_size
    found, (maps, device, tile_size) = yield from look(1.0)
    return found, maps, device, tile_size


def estimate_diameter(
    model: SegmentationModel, config: ModelConfig, image: np.ndarray, **kwargs
) -> float | None:
    """The nuclei's median diameter (px) as ``diameter="auto"`` estimates it (None: no
    nucleus found). ``kwargs`` as :func:`plane_maps`."""
    kwargs = {"post": None, "device": model_device(model), "tile_size": None, "tta": False} | kwargs
    found, *_ = drain(_estimate(model, config, np.asarray(image), **kwargs))
    return found


def _where(i: int, n: int) -> str:
    return f"plane {i + 1}/{n}, " if n > 1 else ""


def _tile_step(plane: int, planes: int, step: tuple[int, int] | str) -> Progress:
    """A step of the network (share ``NETWORK_SHARE`` of the whole run), or a note."""
    if isinstance(step, str):
        return Progress(NETWORK_SHARE * plane / planes, f"{_where(plane, planes)}{step}")
    done, total = step
    fraction = NETWORK_SHARE * (plane + done / max(total, 1)) / planes
    return Progress(fraction, f"{_where(plane, planes)}tile {done}/{total}")


def labels_of_planes(
    maps: np.ndarray,
    config: ModelConfig,
    post: PostprocessConfig | None = None,
    stop: threading.Event | None = None,
    start: float = 0.0,
) -> Generator[Progress, None, np.ndarray]:
    """Instance labels of every plane's maps, a plane per step (a threshold moved: no network).

    Parameters
    ----------
    maps : (P, M, H, W) ndarray of float32
        As returned by :func:`segment`.
    config : ModelConfig
    post : PostprocessConfig, optional
        Thresholds; None: ``config.postprocess``.
    stop : threading.Event, optional
        Checked between planes.
    start : float
        Progress fraction at the start (the share of the network before).

    Returns
    -------
    (P, H, W) ndarray of uint16 (uint32 when a plane has more than 65,535 nuclei)
        Each plane numbered 1..N on its own.

    Raises
    ------
    Cancelled
        ``stop`` was set.
    """
    planes = []
    for i, plane_maps in enumerate(maps):
        check_stop(stop)
        planes.append(labels_from_predicted(plane_maps, config, post))
        text = f"{_where(i, len(maps))}post-processing"
        yield Progress(start + (1 - start) * (i + 1) / len(maps), text)
    return np.stack(planes) if planes else np.zeros((0, *maps.shape[2:]), np.uint16)


def segment(
    model: SegmentationModel,
    config: ModelConfig,
    image,
    planes: Sequence[Index] = ((),),
    *,
    post: PostprocessConfig | None = None,
    device: str | torch.device | None = None,
    tile_size: int | None = None,
    tta: bool = False,
    stop: threading.Event | None = None,
    diameter: float | str | None = None,
) -> Generator[Progress, None, tuple[np.ndarray, np.ndarray]]:
    """Maps and instance labels of the chosen 2-D planes of an image or stack.

    Parameters
    ----------
    model : SegmentationModel
    config : ModelConfig
    image : array-like, (..., H, W) or (..., H, W, C)
        Any array that ``image[index]`` reads a plane from (numpy, dask, lazy stacks).
    planes : sequence of tuple of int
        Indices over the leading dimensions (see :func:`plane_indices`); the
        default ``[()]`` is the 2-D image itself.
    post : PostprocessConfig, optional
        Thresholds; None: ``config.postprocess``.
    device : str or torch.device, optional
        Resolved with :func:`~napari_nucleiseg.devices.resolve_device`; None: the model's.
    tile_size, tta
        See :func:`~napari_nucleiseg.inference.predict_maps`.
    stop : threading.Event, optional
        Set it (from any thread) to stop within one network layer.
    diameter : float, "auto" or None
        The nuclei's diameter in pixels, or "auto" to estimate it per plane: each
        plane is resized for the network so that its nuclei are as wide as the
        model was trained to see (:func:`plane_maps`). None: not resized.

    Yields
    ------
    Progress
        After every batch of tiles and every plane's post-processing.

    Returns
    -------
    maps : (P, M, H, W) ndarray of float32
        Keep them to re-threshold with :func:`labels_of_planes`.
    labels : (P, H, W) ndarray of uint16 (uint32 beyond 65,535 nuclei in a plane)

    Raises
    ------
    Cancelled
        ``stop`` was set.
    """
    dev = model_device(model) if device is None else resolve_device(device)
    maps = np.empty((0, 0, 0, 0), np.float32)
    with stop_switch(stop):
        for i, index in enumerate(planes):
            check_stop(stop)
            run = plane_maps(
                model,
                config,
                np.asarray(image[index]),
                diameter=diameter,
                post=post,
                device=dev,
                tile_size=tile_size,
                tta=tta,
            )
            plane, dev, tile_size = yield from relay(run, partial(_tile_step, i, len(planes)))
            if len(planes) == 1:  # its maps as they are: no copy of a huge image's maps
                maps = plane[None]
            else:
                if i == 0:
                    maps = np.empty((len(planes), *plane.shape), np.float32)
                maps[i] = plane
    labels = yield from labels_of_planes(maps, config, post, stop, NETWORK_SHARE)
    return maps, labels
