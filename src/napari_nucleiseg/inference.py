"""Run a model on any image size: device choice, tiles with tapered blending, batches, flips.

``predict_maps`` is a generator (it yields ``(done, total)`` after each batch
of tiles and returns the maps) so that a napari ``thread_worker`` can report
progress and cancel between batches; :func:`drain` runs any such generator to
the end in a script. From image to labels: :func:`napari_nucleiseg.pipeline.segment`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch

from .devices import resolve_device
from .preprocess import Scaling, scaling
from .runner import runner

if TYPE_CHECKING:
    from .models import ModelConfig, SegmentationModel

#: with ``tile_size=None``, images up to this many (padded) pixels run as one tile
WHOLE_IMAGE_PIXELS = 1536 * 1536
#: tile side used for larger images when ``tile_size=None``
DEFAULT_TILE = 1024
#: pixels shared by tiles blended by a ramp (where cores cannot be exact)
BLEND_OVERLAP = 96
#: the widest context (px) a tile's core is given for exact maps: the U-Net's receptive
#: radius (94 px) fits; LinkNet's (249 px) would cost 4x the network's time in 1024-px tiles
MAX_EXACT_HALO = 128
#: columns of the maps written at once (bounds the temporaries of a wide image's band)
FLUSH_COLUMNS = 4096
#: the four flips of test-time augmentation, as tensor dims to flip
_FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))

T = TypeVar("T")
Y = TypeVar("Y")


def drain(gen: Generator[Y, None, T], progress: Callable[[Y], object] | None = None) -> T:
    """Run a progress generator to its end and return its value.

    Parameters
    ----------
    gen : generator
        E.g. :func:`predict_maps` (yields ``(done, total)``) or ``training.train``.
    progress : callable, optional
        Called with every yielded item (e.g. to update a progress bar).
    """
    while True:
        try:
            step = next(gen)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(step)


def tile_starts(length: int, tile: int, overlap: int, divisor: int) -> list[int]:
    """Start offsets of tiles of side ``tile`` covering ``length`` with at least ``overlap``.

    ``length`` and ``tile`` are multiples of ``divisor``; starts are too, so every
    tile sees the same pooling grid as the whole image.
    """
    if tile >= length:
        return [0]
    step = max(tile - overlap, divisor)
    n = math.ceil((length - tile) / step) + 1
    units = (length - tile) // divisor
    return sorted({divisor * round(i * units / (n - 1)) for i in range(n)})


def _ramp(tile: int, start: int, length: int, overlap: int) -> np.ndarray:
    """1-D blending weight of a tile: a raised-cosine ramp over ``overlap`` at inner edges.

    Edges on the image border keep weight 1; the weights never reach 0.
    """
    w = np.ones(tile, dtype=np.float32)
    n = min(overlap, tile // 2)
    if n > 0:
        ramp = (0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)).astype(np.float32)
        if start > 0:
            w[:n] = ramp
        if start + tile < length:
            w[-n:] = ramp[::-1]
    return w


def _cores(starts: list[int], tile: int) -> dict[int, np.ndarray]:
    """1-D weights that give each pixel to one tile, the boundary in the middle of each
    overlap: every pixel then has at least half the overlap of context in its tile."""
    out = {}
    for i, start in enumerate(starts):
        lo = start if i == 0 else start + (starts[i - 1] + tile - start) // 2
        hi = (
            start + tile
            if i == len(starts) - 1
            else starts[i + 1] + (start + tile - starts[i + 1]) // 2
        )
        w = np.zeros(tile, np.float32)
        w[lo - start : hi - start] = 1
        out[start] = w
    return out


_RADII: dict[tuple, int] = {}


def receptive_radius(model: torch.nn.Module) -> int:
    """How far (px) an output pixel of ``model`` sees: the extent of the gradient of a
    centre pixel in a copy whose every path passes (identity activations, average pooling,
    positive weights, in float64). Cached per architecture (class and parameter shapes)."""
    key = (type(model).__name__, *((n, tuple(p.shape)) for n, p in model.named_parameters()))
    if key in _RADII:
        return _RADII[key]
    probe = copy.deepcopy(model).cpu().double().eval()
    for module in list(probe.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.ReLU):
                setattr(module, name, torch.nn.Identity())
            elif isinstance(child, torch.nn.MaxPool2d):
                pool = torch.nn.AvgPool2d(child.kernel_size, child.stride, child.padding)
                setattr(module, name, pool)
            elif isinstance(child, torch.nn.BatchNorm2d):
                child.running_mean.zero_()
                child.running_var.fill_(1)
    with torch.no_grad():
        for p in probe.parameters():
            p.abs_().add_(1e-3)
    side = 256
    while True:
        x = torch.zeros(1, probe.in_channels, side, side, dtype=torch.float64, requires_grad=True)
        probe(x)[0, 0, side // 2, side // 2].backward()
        rows, cols = np.nonzero(x.grad[0].abs().sum(0).numpy())
        reach = max(side // 2 - rows.min(), rows.max() - side // 2, side // 2 - cols.min())
        if rows.min() > 0 and cols.min() > 0 or side >= 4096:
            break
        side *= 2
    _RADII[key] = int(max(reach, cols.max() - side // 2))
    return _RADII[key]


def _validate_run(
    model: SegmentationModel,
    config: ModelConfig,
    tile_size: int | None,
    overlap: int | None,
    batch_size: int,
) -> None:
    if tile_size is not None and tile_size < model.divisor:
        raise ValueError(
            f"tile_size {tile_size} is smaller than the network's divisor {model.divisor}"
        )
    if overlap is not None and overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if model.in_channels != config.in_channels or model.out_channels != config.out_channels:
        raise ValueError(
            f"model has {model.in_channels} -> {model.out_channels} channels but its config "
            f"says {config.in_channels} -> {config.out_channels}"
        )


def model_device(model: torch.nn.Module) -> torch.device:
    """Where a model's weights are (what runs it when no device is asked for)."""
    return next(model.parameters()).device


def tile_side(height: int, width: int, tile_size: int | None = None) -> int:
    """The tile side :func:`predict_maps` starts from on a (padded) ``height x width`` image.

    ``tile_size`` if given; else the whole image up to ``WHOLE_IMAGE_PIXELS``,
    ``DEFAULT_TILE`` beyond. (``predict_maps`` then rounds it down to the divisor.)
    """
    if tile_size is not None:
        return tile_size
    return max(height, width) if height * width <= WHOLE_IMAGE_PIXELS else DEFAULT_TILE


def reflected(start: int, stop: int, length: int) -> np.ndarray:
    """Indices into an axis of ``length`` of positions ``start..stop-1`` of that axis padded
    at its end as ``np.pad(mode="reflect")`` pads it ("edge" for a length of 1)."""
    index = np.arange(start, stop)
    if length == 1:
        return np.zeros_like(index)
    period = 2 * (length - 1)
    index = index % period
    return np.where(index >= length, period - index, index)


def _tile_input(image, scaling: Scaling, y: int, x: int, th: int, tw: int) -> np.ndarray:
    """The normalised tile at (y, x) of the image padded by reflection: (C, th, tw) float32.

    Only the rows and columns the tile needs are read, so ``image`` may be lazy."""
    h, w = image.shape[:2]
    rows, cols = reflected(y, y + th, h), reflected(x, x + tw, w)
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    region = scaling.apply(np.asarray(image[r0:r1, c0:c1]))
    if r1 - r0 == th and c1 - c0 == tw and rows[0] == r0 and cols[0] == c0:
        return region  # inside the image: no padding
    return np.ascontiguousarray(region[:, (rows - r0)[:, None], (cols - c0)[None, :]])


def predict_maps(
    model: SegmentationModel,
    config: ModelConfig,
    image: np.ndarray,
    *,
    device: str | torch.device | None = None,
    tile_size: int | None = None,
    overlap: int | None = None,
    batch_size: int = 4,
    tta: bool = False,
) -> Generator[tuple[int, int], None, np.ndarray]:
    """Probability maps of an image of any size; a generator of progress.

    Normalises with ``config.normalization``, pads (by reflection) to the
    network's divisor, cuts tiles that overlap by ``overlap`` pixels, runs them
    in batches, and blends them with raised-cosine weights, so that tile
    borders leave no seams (:func:`predict_into`, which writes the maps of a
    huge image where it is told to).

    Parameters
    ----------
    model : SegmentationModel
        Run as :func:`~napari_nucleiseg.runner.runner` runs it (a folded copy in eval mode:
        the model itself is neither changed nor moved).
    config : ModelConfig
        The model's config (normalisation and map names).
    image : (H, W), (H, W, 3) or (H, W, 4) ndarray of any numeric dtype
    device : str or torch.device, optional
        Where to run. None: the device of the model's weights.
    tile_size : int, optional
        Tile side in pixels (rounded down to the divisor). None: one tile up to
        ``WHOLE_IMAGE_PIXELS`` padded pixels, tiles of ``DEFAULT_TILE`` beyond.
    overlap : int, optional
        Pixels shared by neighbouring tiles, blended by a raised-cosine ramp this wide.
        None (the default): tiles that overlap by twice the network's receptive radius
        (:func:`receptive_radius`, rounded up to its divisor) each give the pixels of their
        core, so that every pixel is computed with all the context the network can see:
        the maps of the whole image at once, exactly (on the CPU; tested for the U-Net).
        For tiles under ``2 * radius + divisor`` or a radius over ``MAX_EXACT_HALO``
        (LinkNet's 249 px), tiles blend over ``BLEND_OVERLAP`` pixels instead.
    batch_size : int
        Tiles per forward pass.
    tta : bool
        Average over the four flips of every tile (4x the network time).

    Yields
    ------
    (done, total) : (int, int)
        Forward passes done and to do, after each batch.

    Returns
    -------
    (len(config.maps), H, W) ndarray of float32
        Probabilities in [0, 1], in the order of ``config.maps``; all 0 for an
        image without structure (a contrast below :data:`~.preprocess.MIN_CONTRAST`:
        flat, or noise alone), where percentile scaling would make nuclei of noise.
    """
    _validate_run(model, config, tile_size, overlap, batch_size)
    found = scaling(image, config.normalization)
    out = np.zeros((model.out_channels, *np.shape(image)[:2]), np.float32)
    if found is not None:
        yield from predict_into(
            model, found, image, out, device=device, tile_size=tile_size, overlap=overlap,
            batch_size=batch_size, tta=tta,
        )  # fmt: skip
    return out


def predict_into(
    model: SegmentationModel,
    scaling: Scaling,
    image,
    out,
    *,
    device: str | torch.device | None = None,
    tile_size: int | None = None,
    overlap: int | None = None,
    batch_size: int = 4,
    tta: bool = False,
    rows: tuple[int, int] | None = None,
) -> Generator[tuple[int, int], None, None]:
    """Write the probability maps of ``image`` into ``out``, a band of tiles at a time.

    What :func:`predict_maps` computes, value for value, with memory for one
    band of tiles (a tile's height by the image's width) rather than the
    image: ``image`` may be lazy (Zarr, Dask, tifffile's Zarr store: only the
    tiles' regions are read) and ``out`` a Zarr array on disk.

    Parameters
    ----------
    scaling : Scaling
        The whole image's normalisation (:func:`~napari_nucleiseg.preprocess.scaling`).
    image : array-like, (H, W[, C])
    out : array-like, (model.out_channels, H, W), float32
        Written row band by row band, each row once.
    device, tile_size, overlap, batch_size, tta
        As :func:`predict_maps`.
    rows : (int, int), optional
        Only rows ``first..last-1`` of the maps, from the tiles that reach them: the same
        values as a whole run gives them, so that processes can share one image's rows
        (:mod:`napari_nucleiseg.distributed`). None: every row.

    Yields
    ------
    (done, total) : (int, int)
        Forward passes done and to do, after each batch.
    """
    dev = model_device(model) if device is None else resolve_device(device)
    h, w = image.shape[:2]
    div = model.divisor
    ph, pw = -(-h // div) * div, -(-w // div) * div
    tile = max(div, tile_side(ph, pw, tile_size) // div * div)
    th, tw = min(tile, ph), min(tile, pw)
    exact = False
    if overlap is None:
        overlap = BLEND_OVERLAP
        tiled = [t for t, n in ((th, ph), (tw, pw)) if t < n]
        if tiled:  # tiles whose cores see as far as the network does
            halo = -(-receptive_radius(model) // div) * div
            if halo <= MAX_EXACT_HALO and min(tiled) >= 2 * halo + div:
                overlap, exact = 2 * halo, True
    ys, xs = tile_starts(ph, th, overlap, div), tile_starts(pw, tw, overlap, div)
    if exact:
        wy, wx = _cores(ys, th), _cores(xs, tw)
    else:
        wy = {y: _ramp(th, y, ph, overlap) for y in ys}
        wx = {x0: _ramp(tw, x0, pw, overlap) for x0 in xs}
    # tiles form a grid, so the sum of weights is separable
    norm_y, norm_x = np.zeros(ph, np.float32), np.zeros(pw, np.float32)
    for y in ys:
        norm_y[y : y + th] += wy[y]
    for x0 in xs:
        norm_x[x0 : x0 + tw] += wx[x0]
    first, last = (0, h) if rows is None else rows
    if not 0 <= first <= last <= h:
        raise ValueError(f"rows {rows} are not within the image's 0..{h}")
    ys = [y for y in ys if wy[y][max(first - y, 0) : max(last - y, 0)].any()]
    if not ys:
        return
    band_top, band = ys[0], np.zeros((model.out_channels, th, pw), np.float32)

    def flush(stop: int) -> None:
        """Write the band's rows above ``stop`` (no later tile reaches them) and drop them,
        a block of columns at a time (no band-sized temporaries)."""
        nonlocal band_top
        top, end = max(band_top, first), min(stop, h, last)
        for x0 in range(0, w if top < end else 0, FLUSH_COLUMNS):
            x1 = min(x0 + FLUSH_COLUMNS, w)
            weight = np.outer(norm_y[top:end], norm_x[x0:x1])
            out[:, top:end, x0:x1] = band[:, top - band_top : end - band_top, x0:x1] / weight
        shift = min(stop - band_top, th)
        band[:, : th - shift] = band[:, shift:]
        band[:, th - shift :] = 0
        band_top = stop

    tiles = [(y, x0) for y in ys for x0 in xs]
    flips = _FLIPS if tta else _FLIPS[:1]
    total = len(tiles) * len(flips)
    forward = runner(model, dev)
    with torch.inference_mode():
        done = 0
        for i in range(0, len(tiles), batch_size):
            batch = tiles[i : i + batch_size]
            xb = torch.from_numpy(
                np.stack([_tile_input(image, scaling, y, x0, th, tw) for y, x0 in batch])
            ).to(dev)
            prob = torch.zeros((len(batch), model.out_channels, th, tw), device=dev)
            for dims in flips:
                xf = torch.flip(xb, dims) if dims else xb
                yf = torch.sigmoid(forward(xf).float())
                prob += torch.flip(yf, dims) if dims else yf
                done += len(batch)
            prob = (prob / len(flips)).cpu().numpy()
            for (y, x0), p in zip(batch, prob, strict=True):
                if y != band_top:  # a new row of tiles: the rows above it are final
                    flush(y)
                band[:, :, x0 : x0 + tw] += p * np.outer(wy[y], wx[x0])
            yield done, total
    flush(ph)
