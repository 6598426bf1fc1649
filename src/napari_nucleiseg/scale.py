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

import numpy as np
from skimage.transform import resize

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


def target_factor(diameter: float, config) -> float:
    """How much to resize an image whose nuclei are ``diameter`` px for the model of
    ``config``: to its diameter, unless already within :data:`TOLERANCE` of it (1.0); for
    a model trained on images as they came, to the nearer end of :data:`AS_THEY_CAME_RANGE`
    when outside it (1.0 inside).
    """
    if config.diameter is None:
        low, high = AS_THEY_CAME_RANGE
        if low <= diameter <= high:
            return 1.0
        return resize_factor(diameter, high if diameter > high else low)
    factor = resize_factor(diameter, config.diameter)
    return 1.0 if 1 / TOLERANCE <= factor <= TOLERANCE else factor


def resize_image(image: np.ndarray, factor: float) -> np.ndarray:
    """``image`` (H, W) or (H, W, C) resized by ``factor`` (bilinear, anti-aliased when
    shrinking), in float32 with its own range."""
    image = np.asarray(image)
    shape = tuple(max(1, round(n * factor)) for n in image.shape[:2]) + image.shape[2:]
    out = resize(
        image.astype(np.float32, copy=False),
        shape,
        order=1,
        preserve_range=True,
        anti_aliasing=factor < 1,
    )
    return out.astype(np.float32, copy=False)


def resize_maps(maps: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Probability maps (M, h, w) resized back to the image's (H, W), bilinear."""
    if maps.shape[1:] == tuple(shape):
        return maps
    out = resize(maps, (maps.shape[0], *shape), order=1, preserve_range=True, anti_aliasing=False)
    return out.astype(np.float32, copy=False)
