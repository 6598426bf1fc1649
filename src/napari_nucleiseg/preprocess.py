"""The one normalisation used by training and inference: grey, percentiles, inversion.

Every image reaches the network as bright nuclei on a dark background, scaled
so that its ``low`` percentile maps to 0 and its ``high`` percentile to 1.

Inversion rule (``invert="auto"``): after percentile scaling of the grey
image, invert when its median is above ``invert_threshold`` (0.3). The median
pixel is background in nearly every microscopy image: in fluorescence it sits
near the dark end, in brightfield and H&E near the bright end. Measured on the
670 images of DSB2018 ``stage1_train`` (1st/99.8th percentiles): the scaled
median is at most 0.19 on the 546 fluorescence images, at least 0.43 on the
108 colour (H&E-like) images and at least 0.82 on the 16 grey brightfield
images, so 0.3 separates all of them with a margin on both sides
(``tests/core/test_preprocess.py`` re-measures it when the data is present).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage as ndi

if TYPE_CHECKING:
    from .models import ModelConfig

CHANNELS = ("grey", "rgb")
INVERT = ("auto", "always", "never")
#: above this many pixels, percentiles are taken on a regular subsample (same result every time)
_PERCENTILE_PIXELS = 1 << 22
#: an image whose contrast (:func:`contrast`) is below this holds no nuclei: percentile
#: scaling would stretch its noise into blobs. Measured (benchmarks/bench_contrast.py): the
#: 670 stage-1 images are at 30.4 or more (median 170.5), the 30 MoNuSeg H&E tiles at 95.6 or
#: more; uniform 8-bit noise is at 3.3, Gaussian noise at 5.3, a flat 137 +- 1 image at 2.7.
MIN_CONTRAST = 8.0
#: Immerkaer's kernel: a Laplacian difference that cancels any plane, so that what is left
#: of an image is its noise (and edges, which the median of its magnitude ignores)
_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


@dataclass(frozen=True)
class NormalizeConfig:
    """How an image becomes network input; stored in every checkpoint.

    Attributes
    ----------
    channels : {"grey", "rgb"}
        "grey": colour images are averaged to one channel. "rgb": three
        channels are kept (a grey image is repeated).
    low, high : float
        Percentiles mapped to 0 and 1.
    invert : {"auto", "always", "never"}
        "auto" applies the rule of this module's docstring.
    invert_threshold : float
        The scaled median above which "auto" inverts.
    """

    channels: str = "grey"
    low: float = 1.0
    high: float = 99.8
    invert: str = "auto"
    invert_threshold: float = 0.3

    def __post_init__(self) -> None:
        if self.channels not in CHANNELS:
            raise ValueError(
                f"channels must be one of {', '.join(CHANNELS)}, got {self.channels!r}"
            )
        if self.invert not in INVERT:
            raise ValueError(f"invert must be one of {', '.join(INVERT)}, got {self.invert!r}")
        if not 0 <= self.low < self.high <= 100:
            raise ValueError(f"need 0 <= low < high <= 100, got low={self.low}, high={self.high}")

    @property
    def in_channels(self) -> int:
        """Channels of the normalised image: 1 for grey, 3 for rgb."""
        return 1 if self.channels == "grey" else 3


def _validate_image(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as (H, W) or (H, W, 3) float32, alpha dropped; raise on anything else."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] in (1, 3, 4):
        image = image[..., 0] if image.shape[-1] == 1 else image[..., :3]
    elif image.ndim != 2:
        raise ValueError(f"image has shape {image.shape}; expected (H, W), (H, W, 3) or (H, W, 4)")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image has shape {image.shape}; it has no pixels")
    if not (np.issubdtype(image.dtype, np.number) or image.dtype == bool):
        raise ValueError(f"image has dtype {image.dtype}; expected numbers")
    image = image.astype(np.float32, copy=False)
    if not np.all(np.isfinite(image)):
        raise ValueError("image has NaN or infinite values")
    return image


def _subsample(grey: np.ndarray) -> np.ndarray:
    """A regular subsample of a huge image (the whole image otherwise), for its statistics."""
    step = int(np.ceil(np.sqrt(grey.size / _PERCENTILE_PIXELS)))
    return grey[::step, ::step] if step > 1 else grey


def _percentiles(x: np.ndarray, config: NormalizeConfig) -> tuple[float, float]:
    lo, hi = np.percentile(_subsample(x), [config.low, config.high])
    return float(lo), float(hi)


def _scale(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (x - np.float32(lo)) / np.float32(max(hi - lo, 1e-6 * max(abs(hi), 1.0)))


def _inverts(grey: np.ndarray, lo: float, hi: float, config: NormalizeConfig) -> bool:
    if config.invert != "auto":
        return config.invert == "always"
    median = float(np.median(_subsample(grey)))
    return (median - lo) / max(hi - lo, 1e-6) > config.invert_threshold


def _prepared(image: np.ndarray, config: NormalizeConfig):
    """What normalising and the contrast test both start from, computed once: the image as
    float32, its grey version, its percentiles, and whether it was stored as integers."""
    raw = np.asarray(image)
    image = _validate_image(raw)
    grey = _grey(image)
    integer = np.issubdtype(raw.dtype, np.integer) or raw.dtype == bool
    return image, grey, *_percentiles(grey, config), integer


def _contrast(grey: np.ndarray, lo: float, hi: float, integer: bool) -> float:
    sample = _subsample(grey)
    response = ndi.convolve(sample, _NOISE_KERNEL, mode="reflect")
    sigma = float(np.median(np.abs(response))) / (0.6745 * 6)  # the kernel's gain is 6
    if integer:
        sigma = max(sigma, 1 / np.sqrt(12))
    return (hi - lo) / sigma if sigma > 0 else (np.inf if hi > lo else 0.0)


def contrast(image: np.ndarray, config: NormalizeConfig | ModelConfig | None = None) -> float:
    """How far an image's grey levels span beyond its noise: the percentile range of
    :func:`normalize` over the noise's standard deviation.

    The noise is the median magnitude of Immerkaer's Laplacian difference (robust
    to the edges of nuclei), and at least the quantisation noise of an integer
    image (1/sqrt(12) of a grey level). Compare with :data:`MIN_CONTRAST`.
    """
    _, grey, lo, hi, integer = _prepared(image, _config(config))
    return _contrast(grey, lo, hi, integer)


def should_invert(image: np.ndarray, config: NormalizeConfig | ModelConfig | None = None) -> bool:
    """Whether :func:`normalize` inverts ``image`` (a bright background): the module's rule.

    Parameters
    ----------
    image : (H, W), (H, W, 3) or (H, W, 4) ndarray of any numeric dtype
    config : NormalizeConfig or ModelConfig, optional
    """
    config = _config(config)
    grey = _grey(_validate_image(image))
    return _inverts(grey, *_percentiles(grey, config), config)


def _config(config: NormalizeConfig | ModelConfig | None) -> NormalizeConfig:
    return NormalizeConfig() if config is None else getattr(config, "normalization", config)


def _grey(image: np.ndarray) -> np.ndarray:
    return image.mean(axis=-1) if image.ndim == 3 else image


def normalize(image: np.ndarray, config: NormalizeConfig | ModelConfig | None = None) -> np.ndarray:
    """Turn an image into network input: grey (or RGB), percentile-scaled, bright nuclei.

    Parameters
    ----------
    image : (H, W), (H, W, 3) or (H, W, 4) ndarray of any numeric dtype
        Grey or colour image as read (uint8, uint16, float); alpha is ignored.
    config : NormalizeConfig or ModelConfig, optional
        The settings, or a model config holding them as ``.normalization``;
        defaults to :class:`NormalizeConfig()`.

    Returns
    -------
    (C, H, W) ndarray of float32
        C = 1 for "grey", 3 for "rgb". The ``low``/``high`` percentiles map to
        0/1 (values beyond are kept, not clipped); inverted images are ``1 - x``.

    Raises
    ------
    ValueError
        On a shape, dtype or value (NaN, inf) the function cannot use.
    """
    config = _config(config)
    image, grey, lo, hi, _ = _prepared(image, config)
    return _normalized(image, grey, lo, hi, config)


def network_input(
    image: np.ndarray, config: NormalizeConfig | ModelConfig | None = None
) -> np.ndarray | None:
    """:func:`normalize`, or None for an image without structure (a :func:`contrast` under
    :data:`MIN_CONTRAST`: flat, or noise alone, which scaling would stretch into blobs).
    The image is validated and its percentiles taken once for both."""
    config = _config(config)
    image, grey, lo, hi, integer = _prepared(image, config)
    if _contrast(grey, lo, hi, integer) < MIN_CONTRAST:
        return None
    return _normalized(image, grey, lo, hi, config)


def _normalized(
    image: np.ndarray, grey: np.ndarray, lo: float, hi: float, config: NormalizeConfig
) -> np.ndarray:
    invert = _inverts(grey, lo, hi, config)
    if config.channels == "grey":
        out = _scale(grey, lo, hi)[None]
    else:
        rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=-1)
        out = np.stack([_scale(c, *_percentiles(c, config)) for c in np.moveaxis(rgb, -1, 0)])
    if invert:
        out = np.float32(1) - out
    return np.ascontiguousarray(out, dtype=np.float32)
