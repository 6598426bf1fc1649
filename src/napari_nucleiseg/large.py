"""Segment an image of any size in memory set by the tile, not the image.

:func:`segment_large` is :func:`~napari_nucleiseg.pipeline.segment` for one
2-D image, step for step, with every whole-image array on disk:

1. the normalisation's statistics from a regular subsample and a central crop
   (:func:`~napari_nucleiseg.preprocess.scaling`), the image read lazily;
2. the network's maps, a band of tiles at a time, on the same grid of tiles as
   in memory, into a Zarr array in a scratch folder
   (:func:`~napari_nucleiseg.inference.predict_into`);
3. the labels, chunk by chunk, into the caller's array (Zarr on disk), exactly
   the nuclei of post-processing the whole maps at once
   (:func:`~napari_nucleiseg.stitch.stitched_labels`).

The labels equal :func:`~napari_nucleiseg.stitch.canonical` of ``segment``'s
on the same image (``tests/core/test_large.py``). Peak memory is one band of
maps (a tile's height by the image's width, float32), one tile through the
network, and one post-processing window.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import scale
from .devices import resolve_device
from .inference import drain, model_device, predict_into
from .pipeline import NETWORK_SHARE, Progress, estimate_diameter, relay
from .postprocess import PostprocessConfig
from .preprocess import scaling
from .runner import stop_switch
from .stitch import fits, stitched_labels

if TYPE_CHECKING:
    from .models import ModelConfig, SegmentationModel
    from .preprocess import Scaling

    #: (factor, scaling, maps folder, chunk) -> progress: maps computed elsewhere
    Network = Callable[[float, Scaling, Path, int], Generator[tuple[int, int], None, None]]

#: images of more pixels than this are segmented by :func:`segment_large` (the command line
#: and the batch); the environment variable NUCLEISEG_LARGE_PIXELS sets another bound
LARGE_PIXELS = int(os.environ.get("NUCLEISEG_LARGE_PIXELS", 4096 * 4096))
#: side of the post-processing chunks and of the Zarr chunks of maps and labels
CHUNK = 1024
#: context around each chunk (px): clumps of nuclei up to about this size are resolved in
#: their chunk's window, larger ones in a window of their own (the result is the same)
HALO = 128
#: side of the central crop on which ``diameter="auto"`` estimates the nuclei's size
ESTIMATE_SIDE = 2048


def label_array_dtype(height: int, width: int) -> np.dtype:
    """uint32 labels, uint64 for images of 2**32 - 1 pixels or more (the stitching names each
    nucleus by its first pixel before numbering them)."""
    return np.dtype(np.uint32 if fits(np.uint32, height, width) else np.uint64)


def zarr_array(path: str | os.PathLike, shape: tuple[int, ...], dtype, chunk: int = CHUNK):
    """A new Zarr array on disk of zeros, chunked ``chunk`` x ``chunk`` over its last two axes."""
    import zarr

    chunks = (*shape[:-2], min(chunk, shape[-2]), min(chunk, shape[-1]))
    return zarr.open_array(
        store=str(path), mode="w", shape=shape, chunks=chunks, dtype=dtype, fill_value=0
    )


def labels_array(shape: tuple[int, ...], folder: str | os.PathLike | None = None):
    """Zeros for the labels of an image of ``shape`` (H, W, ...): a Zarr array in ``folder``
    (created when missing), or in memory for None; of :func:`label_array_dtype`."""
    height, width = (int(n) for n in shape[:2])
    dtype = label_array_dtype(height, width)
    if folder is None:
        return np.zeros((height, width), dtype)
    Path(folder).mkdir(parents=True, exist_ok=True)
    return zarr_array(Path(folder) / "labels.zarr", (height, width), dtype)


def _factor(model, config, image, diameter, post, device) -> float:
    """The resize factor ``diameter`` asks for; "auto" estimates it on a central crop."""
    if diameter is None:
        return 1.0
    if diameter == "auto":
        h, w = image.shape[:2]
        y0, x0 = max(h - ESTIMATE_SIDE, 0) // 2, max(w - ESTIMATE_SIDE, 0) // 2
        crop = np.asarray(image[y0 : y0 + ESTIMATE_SIDE, x0 : x0 + ESTIMATE_SIDE])
        found = estimate_diameter(model, config, crop, post=post, device=device)
        return 1.0 if found is None else scale.target_factor(found, config)
    return scale.target_factor(diameter, config)


def segment_large(
    model: SegmentationModel,
    config: ModelConfig,
    image,
    labels,
    *,
    post: PostprocessConfig | None = None,
    device: str | None = None,
    tile_size: int | None = None,
    tta: bool = False,
    diameter: float | str | None = None,
    chunk: int = CHUNK,
    halo: int = HALO,
    stop: threading.Event | None = None,
    scratch: str | os.PathLike | None = None,
    network: Network | None = None,
) -> Generator[Progress, None, int]:
    """Write the instance labels of a 2-D image of any size into ``labels``.

    Parameters
    ----------
    model, config, post, device, tile_size, tta, stop
        As :func:`~napari_nucleiseg.pipeline.segment`.
    image : array-like, (H, W), (H, W, 3), (H, W, 4) or, with a channel, (H, W, C)
        numpy, or lazy: a Zarr array, tifffile's Zarr store of a TIFF, a Dask array; read
        a tile at a time.
    labels : array-like, (H, W), of :func:`label_array_dtype`
        Zeros (a Zarr array from :func:`zarr_array`, or numpy); written chunk by chunk.
    diameter : float, "auto" or None
        As ``segment``; "auto" estimates the size on the central ``ESTIMATE_SIDE`` square.
        The image is resized for the network a tile at a time, and the maps back a window
        at a time, to the values ``segment`` resizes the whole to.
    chunk, halo : int
        Post-processing chunks and their context (the result does not depend on them).
    scratch : path, optional
        Where the maps are kept while the labels are made (a temporary folder in it); by
        default the system's temporary folder. They take 4 bytes per pixel and map, less
        after Zarr's compression.
    network : callable, optional
        What computes the maps instead of this process: called with the resize factor,
        the normalisation, the maps' Zarr folder and their chunk side, it fills that
        array (rows of whole chunks at a time, say on a Dask cluster,
        :func:`napari_nucleiseg.distributed.rows_on_cluster`) and yields (done, total).

    Yields
    ------
    Progress

    Returns
    -------
    int
        The number of nuclei (labelled 1..N in the order of their first pixel).

    Raises
    ------
    napari_nucleiseg.pipeline.Cancelled
        ``stop`` was set; ``labels`` is then half written.
    """
    post = post or config.postprocess
    dev = model_device(model) if device is None else resolve_device(device)
    height, width = image.shape[:2]
    if not fits(labels.dtype, height, width):
        raise ValueError(f"labels of {labels.dtype} are too narrow for {height}x{width}")
    with stop_switch(stop):
        factor = _factor(model, config, image, diameter, post, dev)
        seen = scale.resized_view(image, factor)  # its nuclei as wide as the model's
        if factor != 1.0:
            yield Progress(0.0, f"resized {factor:.2f}x")
        found = scaling(seen, config.normalization)
        if found is None:
            return 0
        folder = Path(tempfile.mkdtemp(prefix=".nucleiseg-maps-", dir=scratch))
        try:
            shape = (model.out_channels, *seen.shape[:2])
            maps = zarr_array(folder / "maps.zarr", shape, "f4", chunk)
            if network is None:
                steps = predict_into(
                    model, found, seen, maps, device=dev, tile_size=tile_size, batch_size=1,
                    tta=tta,
                )  # fmt: skip
            else:
                steps = network(factor, found, folder / "maps.zarr", chunk)
            yield from relay(
                steps,
                lambda step: Progress(
                    NETWORK_SHARE * step[0] / max(step[1], 1), f"tile {step[0]}/{step[1]}"
                ),
            )
            if factor != 1.0:  # the maps back at the image's resolution, a window at a time
                maps = scale.ResizedMaps(maps, (height, width))
            stitching = stitched_labels(maps, labels, post, chunk=chunk, halo=halo, stop=stop)
            return (
                yield from relay(
                    stitching,
                    lambda step: Progress(
                        NETWORK_SHARE + (1 - NETWORK_SHARE) * step[0] / max(step[1], 1),
                        f"post-processing {step[0]}/{step[1]}",
                    ),
                )
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def segment_large_array(model, config, image, **options) -> np.ndarray:
    """:func:`segment_large` into a numpy array (a script's or a test's shortcut)."""
    labels = labels_array(image.shape)
    drain(segment_large(model, config, image, labels, **options))
    return labels
