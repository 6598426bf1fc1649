"""Nucleus size: the network sees nuclei at the diameter it was trained on.

Nuclei in users' images range from a few pixels to a hundred; a network sees
them well over a range of about 4x. A model records the diameter it was
trained to see (``ModelConfig.diameter``; training rescales every sample to
it, see :class:`~napari_nucleiseg.training.CropDataset`). At inference an
image whose nuclei are ``d`` pixels across is resized by ``diameter / d``
before the network and its maps back after, so labels are always at the
image's own resolution. ``d`` is given by the user, or estimated from the
labels of looks at an eighth to full size
(:func:`napari_nucleiseg.pipeline.estimate_diameter`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .errors import FileProblem

#: the median nucleus diameter (px) of DSB2018 stage 1 (9 to 53 px per image, median 20):
#: what a model without a recorded diameter was trained on
REFERENCE_DIAMETER = 20.0
#: an image whose nuclei are within this factor of the model's diameter is not resized
TOLERANCE = 1.25
#: the nucleus diameters (px) a model trained on images as they came handles as they are: the
#: range of the per-image medians of DSB2018 stage 1. Resizing 45-50 px nuclei to 20 px
#: lowered its score on the StarDist test split (DSB2018 0.626 -> 0.606, measured with
#: benchmarks/bench_generalisation.py before this rule), so it is resized
#: only to the nearer end of this range
AS_THEY_CAME_RANGE = (9.0, 53.0)
#: the scales at which "auto" looks for nuclei, coarsest first (the last must be 1)
ESTIMATE_SCALES = (0.25, 0.5, 1.0)
#: a coarse look is trusted when its nuclei are at least this share of the model's diameter
MIN_SEEN = 0.6
#: a coarse look is trusted when a look at half its scale finds nuclei this close in size
AGREEMENT = 1.35
#: a coarse look needs at least this many pixels a side
MIN_ESTIMATE_SIDE = 64
#: resize factors are kept within these bounds (a 4x upscale costs 16x the network's time)
FACTOR_RANGE = (0.25, 4.0)


def median_diameter(labels: np.ndarray) -> float | None:
    """The median equivalent diameter (px) of the nuclei of an instance-label image.

    The diameter of the disk of each nucleus' area; None when there is no nucleus.
    """
    areas = np.bincount(np.asarray(labels).ravel().astype(np.int64))[1:]
    areas = areas[areas > 0]
    if areas.size == 0:
        return None
    return float(np.sqrt(4 * np.median(areas) / np.pi))


def resize_factor(diameter: float, model_diameter: float) -> float:
    """How much to resize an image whose nuclei are ``diameter`` px for a network of
    ``model_diameter``, within :data:`FACTOR_RANGE`.

    Raises
    ------
    ValueError
        A diameter that is not a positive finite number.
    """
    if not (np.isfinite(diameter) and diameter > 0):
        raise ValueError(
            f"the nucleus diameter must be a positive number of pixels, got {diameter}"
        )
    return float(np.clip(model_diameter / diameter, *FACTOR_RANGE))


def target_factor(diameter: float | Microns, config) -> float:
    """How much to resize an image whose nuclei are ``diameter`` px for the model of
    ``config``: to its diameter, unless already within :data:`TOLERANCE` of it (1.0); for
    a model trained on images as they came, to the nearer end of :data:`AS_THEY_CAME_RANGE`
    when outside it (1.0 inside).
    """
    if isinstance(diameter, Microns):
        raise TypeError(
            f"a nucleus diameter of {diameter} needs the image's pixel size: in_pixels turns "
            "it into pixels"
        )
    diameter = float(diameter)
    if config.diameter is None:
        low, high = AS_THEY_CAME_RANGE
        if low <= diameter <= high:
            return 1.0
        return resize_factor(diameter, high if diameter > high else low)
    factor = resize_factor(diameter, config.diameter)
    return 1.0 if 1 / TOLERANCE <= factor <= TOLERANCE else factor


@dataclass(frozen=True)
class Microns:
    """A nucleus diameter in µm, as biologists know their nuclei: each image's pixel size
    (its file's, or one the user gives) turns it into pixels (:func:`in_pixels`)."""

    value: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.value) and self.value > 0):
            raise ValueError(
                f"the nucleus diameter must be a positive number of µm, got {self.value}"
            )

    def __str__(self) -> str:
        return f"{self.value:g} µm"


def in_pixels(
    diameter: float | str | Microns | None, pixel_size: tuple[float, float] | None, where
) -> float | str | None:
    """``diameter`` for an image of ``pixel_size`` (y, x) µm: a :class:`Microns` in pixels
    (over the geometric mean of the two sides), anything else as it is.

    Raises
    ------
    FileProblem
        A diameter in µm for an image (named by ``where``) that has no pixel size.
    """
    if not isinstance(diameter, Microns):
        return diameter
    if pixel_size is None:
        raise FileProblem(
            where,
            f"has no pixel size, so a nucleus diameter of {diameter} cannot be turned into "
            "pixels: give the pixel size, or the diameter in pixels",
        )
    return diameter.value / math.sqrt(pixel_size[0] * pixel_size[1])


#: raw pixels read at once when a resized view is computed (bounds its memory)
_RESIZE_BLOCK_PIXELS = 1 << 25


def _input_coordinates(n_in: int, n_out: int, index: np.ndarray) -> np.ndarray:
    """Where output pixels ``index`` of an axis resized from ``n_in`` to ``n_out`` fall in the
    input (pixel centres aligned, as scikit-image's ``resize``)."""
    return (index + 0.5) * (n_in / n_out) - 0.5


def resized_region(image, shape: tuple[int, int], rows: np.ndarray, cols: np.ndarray, smooth: bool):
    """The pixels ``rows x cols`` of ``image`` resized to ``shape``: bilinear, after a
    Gaussian of sigma ``(scale - 1) / 2`` per shrunk axis when ``smooth`` (anti-aliasing).

    Only the input region those pixels need is read (``image`` may be lazy), and every
    value is the one the whole image resized at once has (a region's coordinates differ
    from the whole's by whole pixels, which float64 subtracts exactly; the Gaussian and the
    interpolation see the same input around each pixel). So a huge image can be resized a
    tile at a time.

    Returns
    -------
    (len(rows), len(cols)[, C]) ndarray of float32
    """
    height, width = image.shape[:2]
    ys = _input_coordinates(height, shape[0], np.asarray(rows, np.float64))
    xs = _input_coordinates(width, shape[1], np.asarray(cols, np.float64))
    sigma = [max(0.0, (n / m - 1) / 2) if smooth else 0.0 for n, m in zip((height, width), shape)]
    pad = [int(4 * s + 0.5) + 2 for s in sigma]  # scipy's Gaussian radius, and the bilinear's
    y0, x0 = max(int(np.floor(ys.min())) - pad[0], 0), max(int(np.floor(xs.min())) - pad[1], 0)
    y1 = min(int(np.floor(ys.max())) + 1 + pad[0], height)
    x1 = min(int(np.floor(xs.max())) + 1 + pad[1], width)
    region = np.asarray(image[y0:y1, x0:x1]).astype(np.float32, copy=False)
    channels = region.shape[2:]
    if any(sigma):
        region = ndi.gaussian_filter(region, sigma + [0.0] * len(channels), mode="mirror")
    grid = np.meshgrid(ys - y0, xs - x0, indexing="ij")
    planes = [region] if not channels else [region[..., c] for c in range(channels[0])]
    out = [ndi.map_coordinates(p, grid, order=1, mode="mirror", output=np.float32) for p in planes]
    return out[0] if not channels else np.stack(out, axis=-1)


class Resized:
    """A view of ``image`` resized to ``shape`` (H, W), computed where it is indexed by
    :func:`resized_region` (rows and columns by slices, any step), a block of rows at a time."""

    def __init__(self, image, shape: tuple[int, int], smooth: bool):
        self.image, self.smooth = image, smooth
        self.shape = (int(shape[0]), int(shape[1]), *image.shape[2:])
        self.dtype = np.dtype(np.float32)
        self.ndim = len(self.shape)

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        rows = np.arange(*key[0].indices(self.shape[0]))
        cols = (
            np.arange(*key[1].indices(self.shape[1])) if len(key) > 1 else np.arange(self.shape[1])
        )
        stride = int(rows[1] - rows[0]) if len(rows) > 1 else 1
        raw_per_row = self.image.shape[1] * stride * max(self.image.shape[0] / self.shape[0], 1)
        step = max(1, int(_RESIZE_BLOCK_PIXELS // raw_per_row))
        blocks = [
            resized_region(self.image, self.shape[:2], rows[i : i + step], cols, self.smooth)
            for i in range(0, len(rows), step)
        ]
        out = (
            np.concatenate(blocks)
            if blocks
            else np.zeros((0, len(cols), *self.shape[2:]), np.float32)
        )
        return out[(slice(None), slice(None), *key[2:])] if len(key) > 2 else out


class _Map:
    """Map ``index`` of a stack of maps (M, h, w), as a lazy 2-D array."""

    def __init__(self, maps, index: int):
        self.maps, self.index, self.shape = maps, index, tuple(maps.shape[1:])

    def __getitem__(self, key) -> np.ndarray:
        return np.asarray(self.maps[(self.index, *key)])


class ResizedMaps:
    """A view of maps (M, h, w) resized to (M, H, W) as :func:`resize_maps` resizes them,
    computed where it is indexed (``view[:, rows, cols]``); the maps may be on disk."""

    def __init__(self, maps, shape: tuple[int, int]):
        self.maps = maps
        self.shape = (maps.shape[0], int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(np.float32)

    def __getitem__(self, key) -> np.ndarray:
        which, rows, cols = key
        planes = range(self.shape[0])[which]
        return np.stack(
            [Resized(_Map(self.maps, m), self.shape[1:], False)[rows, cols] for m in planes]
        )


def resized_shape(shape: tuple[int, ...], factor: float) -> tuple[int, int]:
    """The (H, W) of an image of ``shape`` resized by ``factor``."""
    return tuple(max(1, round(n * factor)) for n in shape[:2])


def resize_image(image: np.ndarray, factor: float) -> np.ndarray:
    """``image`` (H, W) or (H, W, C) resized by ``factor`` (bilinear, anti-aliased when
    shrinking), in float32 with its own range (:func:`resized_region`, at once)."""
    image = np.asarray(image)
    shape = resized_shape(image.shape, factor)
    return resized_region(image, shape, np.arange(shape[0]), np.arange(shape[1]), factor < 1)


def resize_maps(maps: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Probability maps (M, h, w) resized back to the image's (H, W), bilinear."""
    if maps.shape[1:] == tuple(shape):
        return maps
    rows, cols = np.arange(shape[0]), np.arange(shape[1])
    return np.stack([resized_region(m, shape, rows, cols, False) for m in maps])


def resized_view(image, factor: float):
    """``image`` as the network sees it, resized by ``factor`` a region at a time (itself for
    1): what ``large.segment_large`` and the Dask tasks of its rows both read."""
    if factor == 1.0:
        return image
    return Resized(image, resized_shape(image.shape, factor), factor < 1)
