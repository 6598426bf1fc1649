"""Stacks (time, z, a pile of slices) segmented plane by plane, with a stop switch and OOM fallback.

The napari widget and scripts share these generators: :func:`predict_planes`
yields a :class:`PlaneStep` after every batch of tiles of every plane and
returns the probability maps of all planes; :func:`labels_of_planes` turns
them into instance labels, one plane per step. A GPU out-of-memory error
retries the plane with smaller tiles, then on the CPU, and says so with a
:class:`DeviceFallbackWarning`. A ``threading.Event`` passed as ``stop``
interrupts even a long forward pass within one layer of the network.
"""

from __future__ import annotations

import itertools
import threading
import warnings
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from .inference import DEFAULT_TILE, WHOLE_IMAGE_PIXELS, labels_from_predicted, predict_maps

#: smallest tile tried after a GPU out-of-memory error, before moving to the CPU
MIN_FALLBACK_TILE = 256

Index = tuple[int, ...]


class Cancelled(Exception):
    """Raised inside a forward pass when the stop event is set."""


class DeviceFallbackWarning(UserWarning):
    """The GPU ran out of memory; the run went on with smaller tiles or on the CPU."""


@dataclass(frozen=True)
class PlaneStep:
    """Progress of a run over planes.

    Attributes
    ----------
    plane : int
        Position of the plane being worked on in the list of planes (0-based).
    planes : int
        Number of planes.
    done, total : int
        Forward passes (or post-processing steps) done and to do on this plane.
    """

    plane: int
    planes: int
    done: int
    total: int

    @property
    def fraction(self) -> float:
        """Overall fraction done, in [0, 1]."""
        return (self.plane + self.done / max(self.total, 1)) / max(self.planes, 1)


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


@contextmanager
def stop_switch(model: torch.nn.Module, stop: threading.Event | None) -> Iterator[None]:
    """Make every module of ``model`` raise :class:`Cancelled` once ``stop`` is set.

    The check runs before each layer, so a forward pass of seconds stops in
    milliseconds. The hooks are removed on exit.
    """
    if stop is None:
        yield
        return

    def check(module, args):
        if stop.is_set():
            raise Cancelled

    handles = [m.register_forward_pre_hook(check) for m in model.modules()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _first_tile(shape: tuple[int, int], tile_size: int | None) -> int:
    """The tile side ``predict_maps`` uses for ``tile_size`` (an upper bound)."""
    if tile_size is not None:
        return tile_size
    return max(shape) if shape[0] * shape[1] <= WHOLE_IMAGE_PIXELS else DEFAULT_TILE


def predict_with_fallback(
    model: torch.nn.Module,
    config,
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
        side = _first_tile(image.shape[:2], tile) // 2
        if side >= MIN_FALLBACK_TILE:
            tile, batch = side, 1
            note = f"{device.type.upper()} ran out of memory; retrying with {side}-pixel tiles"
        else:
            device, tile, batch = torch.device("cpu"), tile_size, batch_size
            note = "GPU ran out of memory even with small tiles; running on the CPU instead"
        warnings.warn(note, DeviceFallbackWarning, stacklevel=2)


def predict_planes(
    model: torch.nn.Module,
    config,
    image,
    planes: Sequence[Index],
    *,
    device: str | torch.device = "cpu",
    tile_size: int | None = None,
    tta: bool = False,
    stop: threading.Event | None = None,
) -> Generator[PlaneStep, None, np.ndarray]:
    """Probability maps of the chosen 2-D planes of an image or stack.

    Parameters
    ----------
    model : SegmentationModel
    config : ModelConfig
    image : array-like, (..., H, W) or (..., H, W, C)
        Any array that ``image[index]`` reads a plane from (numpy, dask, lazy stacks).
    planes : sequence of tuple of int
        Indices over the leading dimensions (see :func:`plane_indices`);
        ``[()]`` for a 2-D image.
    device : str or torch.device
        Resolved with :func:`~napari_nucleiseg.inference.resolve_device`.
    tile_size, tta
        See :func:`~napari_nucleiseg.inference.predict_maps`.
    stop : threading.Event, optional
        Set it (from any thread) to stop within one network layer.

    Yields
    ------
    PlaneStep
        After every batch of tiles.

    Returns
    -------
    (len(planes), M, H, W) ndarray of float32

    Raises
    ------
    Cancelled
        ``stop`` was set.
    """
    from .devices import resolve_device

    dev = resolve_device(device)
    out: np.ndarray | None = None
    with stop_switch(model, stop):
        for i, index in enumerate(planes):
            if stop is not None and stop.is_set():
                raise Cancelled
            plane = np.asarray(image[index])
            gen = predict_with_fallback(
                model, config, plane, device=dev, tile_size=tile_size, tta=tta
            )
            while True:
                try:
                    done, total = next(gen)
                except StopIteration as end:
                    maps, dev, tile_size = end.value
                    break
                yield PlaneStep(i, len(planes), done, total)
            if out is None:
                out = np.empty((len(planes), *maps.shape), dtype=np.float32)
            out[i] = maps
    return out if out is not None else np.empty((0, 0, 0, 0), np.float32)


def labels_of_planes(
    maps: np.ndarray, config, stop: threading.Event | None = None, **thresholds
) -> Generator[PlaneStep, None, np.ndarray]:
    """Instance labels of every plane's maps, a plane per step.

    Parameters
    ----------
    maps : (P, M, H, W) ndarray of float32
        As returned by :func:`predict_planes`.
    config : ModelConfig
    stop : threading.Event, optional
        Checked between planes.
    **thresholds
        Overrides of ``config.postprocess`` (see ``PostprocessConfig``).

    Returns
    -------
    (P, H, W) ndarray of uint16 (uint32 when a plane has more than 65,535 nuclei)
        Each plane numbered 1..N on its own.

    Raises
    ------
    Cancelled
        ``stop`` was set.
    """
    planes = [None] * len(maps)
    for i, plane_maps in enumerate(maps):
        if stop is not None and stop.is_set():
            raise Cancelled
        planes[i] = labels_from_predicted(plane_maps, config, **thresholds)
        yield PlaneStep(i, len(maps), 1, 1)
    if not planes:
        return np.zeros((0, *maps.shape[2:]), np.uint16)
    dtype = np.result_type(*(p.dtype for p in planes))
    return np.stack(planes).astype(dtype, copy=False)
