"""The one normalisation used by training and inference: channel, grey, percentiles, inversion.

Every image reaches the network as bright nuclei on a dark background, scaled
so that its ``low`` percentile maps to 0 and its ``high`` percentile to 1. A
channel chosen for the run (``channel``) is taken alone, as a grey image,
before anything else.

Inversion rule (``invert="auto"``, :func:`polarity`): invert when the
background is bright. The statistics, on the image as read (percentiles, so
any dtype and offset):

- *median*: the median of the grey image (mean of the channels), scaled so
  that its 1st/99.8th percentiles are 0/1. The median pixel is background in
  most images: near the dark end in fluorescence, near the bright end in
  brightfield. Dense fluorescence (nuclei over half the frame) moves it up;
  dense tissue moves it down.
- *colour*: whether the channels differ, beyond noise: the 90th percentile of
  each pixel's spread (brightest minus darkest channel) above 10 times the
  noise (Immerkaer's estimate, the noisiest channel) and above 2% of the
  range. Grey images stored as RGB, JPEG's colour noise included, are grey.
- *whiteness* (colour only): over the brightest 5% of pixels (by their
  brightest channel), the median of the darkest channel over the median of the
  brightest, both above black (the 1st percentile of the darkest channel).
  Transmitted light is white where nothing absorbs it; a fluorescence
  composite is brightest in the colours of its stains, on black.
- *dim end* (colour only): the 10th percentile of each channel above black,
  over the range (black to the 99.8th percentile of the brightest channel);
  the largest of the three. Fluorescence has black background in every
  channel; stained tissue filling the frame still transmits some colour (the
  blue of haematoxylin and eosin).

A grey image inverts when its median is above 0.5. A colour image inverts
when its whiteness is above 0.35 and its background is bright: its median
above 0.5 or its dim end above 0.15. A composite (nuclei in one channel,
another stain in another, black background) is therefore never inverted
while its stains do not all overlap in its brightest pixels. What no
statistic of a grey image tells apart, nuclei filling the frame brightly and
a bright background, the user settles with ``invert`` ("never" or "always").

Measured with ``benchmarks/bench_polarity.py`` on the 670 images of DSB2018
``stage1_train`` and the 30 MoNuSeg 2018 H&E tiles (kinds as in its
docstring). The rule decides as the median rule of before (the median alone,
above 0.3) on all 670 stage-1 images; unlike it, it inverts all 30 MoNuSeg
tiles (it missed 3) and not a dense, dim fluorescence image of the stage-1
test set (1st/50th/99.8th percentiles 0/20/63: median 0.32):

====================================  ===========  ============  ===========  ===========
kind (images)                         median       spread        whiteness    dim end
====================================  ===========  ============  ===========  ===========
stage-1 grey fluorescence (546)       0.00 - 0.19  0 (grey)      -            -
stage-1 grey brightfield (16)         0.82 - 0.95  0 (grey)      -            -
stage-1 colour, H&E-like (108)        0.43 - 0.93  34 - 338      0.44 - 0.94  0.58 - 0.96
MoNuSeg H&E tiles (30)                0.24 - 0.72  33 - 168      0.48 - 0.98  0.22 - 0.65
the fluorescence as noisy RGB (546)   0.02 - 0.21  2.5 - 3.6     -            -
the fluorescence as composite (546)   0.01 - 0.30  2.0 - 120     0.01 - 0.25  0.01 - 0.27
====================================  ===========  ============  ===========  ===========

(spread in noise sigmas; the last two kinds are made from the fluorescence
images: each channel with noise of sigma 4, and the image in red with a
dilated copy as cytoplasm in green.) ``tests/core/test_polarity.py`` checks
the rule on synthetic images of each kind and on the real ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage as ndi

if TYPE_CHECKING:
    from .models import ModelConfig

CHANNELS = ("grey", "rgb")
INVERT = ("auto", "always", "never")
#: what a run may choose over each model's normalisation (:meth:`NormalizeConfig.chosen`)
RUN_CHOICES = ("invert", "channel")
#: the names a channel may be chosen by (``NormalizeConfig.channel``), as in an RGB image
CHANNEL_NAMES = {"red": 0, "green": 1, "blue": 2}
#: above this many pixels, percentiles are taken on a regular subsample (same result every time)
_PERCENTILE_PIXELS = 1 << 22
#: the colour statistics of the inversion rule are taken on a regular subsample of this many
#: pixels at most (a 520x696 image: every other row and column), its noise on a central crop
#: of at most this side at full resolution (a subsample's noise would hold more texture)
_COLOUR_PIXELS, _NOISE_SIDE = 1 << 18, 512
#: an image whose contrast (:func:`contrast`) is below this holds no nuclei: percentile
#: scaling would stretch its noise into blobs. Measured (benchmarks/bench_contrast.py): the
#: 670 stage-1 images are at 30.4 or more (median 170.5), the 30 MoNuSeg H&E tiles at 95.6 or
#: more; uniform 8-bit noise is at 3.3, Gaussian noise at 5.3, a flat 137 +- 1 image at 2.7.
MIN_CONTRAST = 8.0
#: Immerkaer's kernel: a Laplacian difference that cancels any plane, so that what is left
#: of an image is its noise (and edges, which the median of its magnitude ignores)
_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
#: the inversion rule's thresholds (module docstring): a grey image's scaled median; the
#: spread of a colour image's channels in noise sigmas and in its range; a colour image's
#: whiteness and dim end
GREY_MEDIAN = 0.5
COLOUR_NOISE, COLOUR_RANGE = 10.0, 0.02
WHITENESS, DIM_END = 0.35, 0.15


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
        "auto" applies the rule of this module's docstring (:func:`polarity`);
        "always" is for dark nuclei on a bright background, "never" for bright
        nuclei on a dark one.
    invert_threshold : float, optional
        Not used: the rule's thresholds are this module's. Checkpoints written
        before the rule store 0.3 (the median rule of before) and load as they are.
    channel : int, optional
        A channel (0-based, the last axis of an (H, W, C) image) to segment
        alone, as a grey image; None (the default): every channel, as
        ``channels`` says. A grey image has one channel, 0.
    """

    channels: str = "grey"
    low: float = 1.0
    high: float = 99.8
    invert: str = "auto"
    invert_threshold: float | None = None
    channel: int | None = None

    def __post_init__(self) -> None:
        if self.channels not in CHANNELS:
            raise ValueError(
                f"channels must be one of {', '.join(CHANNELS)}, got {self.channels!r}"
            )
        if self.invert not in INVERT:
            raise ValueError(f"invert must be one of {', '.join(INVERT)}, got {self.invert!r}")
        if not 0 <= self.low < self.high <= 100:
            raise ValueError(f"need 0 <= low < high <= 100, got low={self.low}, high={self.high}")
        if self.channel is not None and (
            isinstance(self.channel, bool)
            or not isinstance(self.channel, (int, np.integer))
            or self.channel < 0
        ):
            raise ValueError(f"channel must be None or an index 0, 1, ..., got {self.channel!r}")

    def chosen(self, choices: Mapping[str, object] | None) -> NormalizeConfig:
        """This normalisation with a run's choices (``{"invert": ..., "channel": ...}``,
        either, both or None) in place of its own: a run's polarity and channel apply over
        each image's model, whose other settings stay its own."""
        if not choices:
            return self
        if unknown := set(choices) - set(RUN_CHOICES):
            raise ValueError(f"a run chooses only {', '.join(RUN_CHOICES)}, not {sorted(unknown)}")
        return replace(self, **choices)

    @property
    def in_channels(self) -> int:
        """Channels of the normalised image: 1 for grey, 3 for rgb."""
        return 1 if self.channels == "grey" else 3


def channel_count(shape: tuple[int, ...]) -> int:
    """The channels of an image of this shape a channel is chosen from: the last axis of
    (H, W, C), 1 for (H, W)."""
    return shape[-1] if len(shape) == 3 else 1


def channel_problem(shape: tuple[int, ...], channel: int | None) -> str | None:
    """What is wrong with choosing ``channel`` of an image of this shape, in words that
    follow the image's name ("has 3 channels (0-2): there is no channel 5"); None: nothing."""
    count = channel_count(shape)
    if channel is None or channel < count:
        return None
    which = f"channels (0-{count - 1})" if count > 1 else "channel (0)"
    return f"has {count} {which}: there is no channel {channel}"


def _chosen_channel(image: np.ndarray, channel: int | None) -> np.ndarray:
    """``image``'s ``channel`` alone, (H, W); ``image`` itself for None."""
    if channel is None:
        return image
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        return image  # _validate_image names the shape
    problem = channel_problem(image.shape, channel)
    if problem:
        raise ValueError(f"the image {problem}")
    return image[..., channel] if image.ndim == 3 else image


def _validate_shape(shape: tuple[int, ...]) -> None:
    if not (len(shape) == 2 or (len(shape) == 3 and shape[-1] in (1, 3, 4))):
        raise ValueError(f"image has shape {shape}; expected (H, W), (H, W, 3) or (H, W, 4)")
    if shape[0] < 1 or shape[1] < 1:
        raise ValueError(f"image has shape {shape}; it has no pixels")


def _validate_image(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as (H, W) or (H, W, 3) float32, alpha dropped; raise on anything else."""
    image = np.asarray(image)
    _validate_shape(image.shape)
    if image.ndim == 3:
        image = image[..., 0] if image.shape[-1] == 1 else image[..., :3]
    if not (np.issubdtype(image.dtype, np.number) or image.dtype == np.bool_):
        raise ValueError(f"image has dtype {image.dtype}; expected numbers")
    whole = np.issubdtype(image.dtype, np.integer) or image.dtype == np.bool_
    image = image.astype(np.float32, copy=False)
    if not whole and not np.all(np.isfinite(image)):  # integers always are
        raise ValueError("image has NaN or infinite values")
    return image


def _step(shape: tuple[int, ...], pixels: int) -> int:
    """The stride of a regular subsample of at most about ``pixels`` pixels of an image of
    ``shape`` (1: every pixel)."""
    return max(int(np.ceil(np.sqrt(shape[0] * shape[1] / pixels))), 1)


def _scale(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (x - np.float32(lo)) / np.float32(max(hi - lo, 1e-6 * max(abs(hi), 1.0)))


def _noise(x: np.ndarray, integer: bool) -> float:
    """The standard deviation of ``x``'s noise (Immerkaer), at least an integer image's
    quantisation noise (1/sqrt(12) of a grey level)."""
    response = ndi.convolve(x, _NOISE_KERNEL, mode="reflect")
    sigma = float(np.median(np.abs(response))) / (0.6745 * 6)  # the kernel's gain is 6
    return max(sigma, 1 / np.sqrt(12)) if integer else sigma


@dataclass(frozen=True)
class _Sample:
    """What the statistics of normalising look at, read from an image once: a regular
    subsample for its percentiles, median and noise, a sparser one for its colours, and a
    central crop at full resolution for its colour noise. A lazy image (Zarr, Dask, a tiled
    TIFF) is read only there, so a huge image's statistics cost a few reads."""

    pixels: np.ndarray  # float32 (h, w) or (h, w, 3): every _step(shape, _PERCENTILE_PIXELS)
    colours: np.ndarray  # the same, every _step(shape, _COLOUR_PIXELS)
    crop: np.ndarray  # float32, the central _NOISE_SIDE square (or less)
    integer: bool  # stored as integers: its quantisation is part of its noise

    @classmethod
    def of(cls, image, channel: int | None) -> _Sample:
        shape = tuple(int(n) for n in image.shape)
        if channel is not None and len(shape) in (2, 3):
            problem = channel_problem(shape, channel)
            if problem:
                raise ValueError(f"the image {problem}")
            shape = shape[:2]
        _validate_shape(shape)
        h, w = shape[:2]

        def read(rows: slice, cols: slice) -> np.ndarray:
            return _validate_image(_chosen_channel(np.asarray(image[rows, cols]), channel))

        step, colour_step = _step(shape, _PERCENTILE_PIXELS), _step(shape, _COLOUR_PIXELS)
        y0, x0 = max(h - _NOISE_SIDE, 0) // 2, max(w - _NOISE_SIDE, 0) // 2
        dtype = np.dtype(getattr(image, "dtype", np.float32))
        return cls(
            pixels=read(slice(None, None, step), slice(None, None, step)),
            colours=read(slice(None, None, colour_step), slice(None, None, colour_step)),
            crop=read(slice(y0, y0 + _NOISE_SIDE), slice(x0, x0 + _NOISE_SIDE)),
            integer=bool(np.issubdtype(dtype, np.integer) or dtype == np.bool_),
        )

    def bounds(self, x: np.ndarray, config: NormalizeConfig) -> tuple[float, float]:
        """The ``low`` and ``high`` percentiles of ``x`` (the grey of :attr:`pixels`, or
        one of their channels)."""
        lo, hi = np.percentile(x, [config.low, config.high])
        return float(lo), float(hi)

    def contrast(self, grey: np.ndarray, lo: float, hi: float) -> float:
        """:func:`contrast` of the image whose grey sample is ``grey``, percentiles ``lo, hi``."""
        sigma = _noise(grey, self.integer)
        return (hi - lo) / sigma if sigma > 0 else (np.inf if hi > lo else 0.0)


@dataclass(frozen=True)
class Polarity:
    """The statistics of the inversion rule (module docstring) of one image.

    Attributes
    ----------
    median : float
        The grey image's median, percentile-scaled (0: its 1st, 1: its 99.8th percentile).
    spread : float
        The 90th percentile of the pixels' channel spread, in noise sigmas (0 for grey).
    colour : bool
        Whether the channels differ beyond noise (and 2% of the range).
    whiteness, dim_end : float
        Of a colour image (NaN for grey): how white its brightest pixels are, and how
        bright the darkest tenth of its brightest channel is.
    """

    median: float
    spread: float = 0.0
    colour: bool = False
    whiteness: float = float("nan")
    dim_end: float = float("nan")

    @property
    def inverts(self) -> bool:
        """The rule: a bright background (grey), or white light on a bright one (colour)."""
        bright = self.median > GREY_MEDIAN
        if not self.colour:
            return bright
        return self.whiteness > WHITENESS and (bright or self.dim_end > DIM_END)


def _polarity(sample: _Sample, grey: np.ndarray, lo: float, hi: float) -> Polarity:
    """:class:`Polarity` of an image's sample, its grey pixels and their percentiles."""
    median = (float(np.median(grey)) - lo) / max(hi - lo, 1e-6)
    if sample.pixels.ndim == 2:
        return Polarity(median)
    rgb = sample.colours
    channels = [rgb[..., c] for c in range(3)]
    darkest = np.minimum(np.minimum(channels[0], channels[1]), channels[2])
    brightest = np.maximum(np.maximum(channels[0], channels[1]), channels[2])
    spread = brightest - darkest
    if not spread.any():  # grey stored as RGB
        return Polarity(median)
    black = float(np.percentile(darkest, 1))
    top, white = np.percentile(brightest, [95, 99.8])
    span = max(float(white) - black, 1e-6)
    spread90 = float(np.percentile(spread, 90))
    crop = sample.crop
    sigma = max(_noise(np.ascontiguousarray(crop[..., c]), sample.integer) for c in range(3))
    in_sigmas = spread90 / sigma if sigma > 0 else (np.inf if spread90 > 0 else 0.0)
    if spread90 <= 0 or in_sigmas <= COLOUR_NOISE or spread90 <= COLOUR_RANGE * span:
        return Polarity(median, in_sigmas)
    brightest_pixels = brightest >= top
    whiteness = float(np.median(darkest[brightest_pixels]) - black) / max(
        float(np.median(brightest[brightest_pixels])) - black, 1e-6
    )
    dim_end = (max(float(x) for x in np.percentile(rgb.reshape(-1, 3), 10, axis=0)) - black) / span
    return Polarity(median, in_sigmas, True, whiteness, dim_end)


@dataclass(frozen=True)
class Scaling:
    """What normalising does to every pixel of one image, found once from the whole image's
    statistics (:func:`scaling`): a huge image normalised tile by tile is, value for value,
    the image normalised at once.

    Attributes
    ----------
    channel : int or None
        The channel taken alone (``NormalizeConfig.channel``).
    grey : bool
        Whether the channels are averaged to one.
    bounds : tuple of (float, float)
        The (low, high) percentiles of each output channel, mapped to 0 and 1.
    invert : bool
        Whether the scaled values are turned into ``1 - x``.
    """

    channel: int | None
    grey: bool
    bounds: tuple[tuple[float, float], ...]
    invert: bool

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Network input of the image or of any region of it: (C, h, w) float32.

        Raises
        ------
        ValueError
            A shape, dtype or value (NaN, inf) that :func:`normalize` refuses.
        """
        image = _validate_image(_chosen_channel(image, self.channel))
        if self.grey:
            out = _scale(_grey(image), *self.bounds[0])[None]
        else:
            rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=-1)
            channels = np.moveaxis(rgb, -1, 0)
            out = np.stack([_scale(c, *b) for c, b in zip(channels, self.bounds, strict=True)])
        if self.invert:
            out = np.float32(1) - out
        return np.ascontiguousarray(out, dtype=np.float32)


def _statistics(image, config: NormalizeConfig) -> tuple[_Sample, np.ndarray, float, float]:
    """An image's sample, its grey pixels and their percentiles: what every rule starts from."""
    sample = _Sample.of(image, config.channel)
    grey = _grey(sample.pixels)
    return sample, grey, *sample.bounds(grey, config)


def _scaling(
    sample: _Sample, grey: np.ndarray, lo: float, hi: float, config: NormalizeConfig
) -> Scaling:
    if config.invert == "auto":
        invert = _polarity(sample, grey, lo, hi).inverts
    else:
        invert = config.invert == "always"
    if config.channels == "grey":
        bounds: tuple[tuple[float, float], ...] = ((lo, hi),)
    else:
        px = sample.pixels
        rgb = px if px.ndim == 3 else np.repeat(px[..., None], 3, axis=-1)
        bounds = tuple(sample.bounds(c, config) for c in np.moveaxis(rgb, -1, 0))
    return Scaling(config.channel, config.channels == "grey", bounds, invert)


def scaling(image, config: NormalizeConfig | ModelConfig | None = None) -> Scaling | None:
    """How :func:`normalize` scales ``image``, or None for an image without structure (a
    :func:`contrast` under :data:`MIN_CONTRAST`: flat, or noise alone, which scaling would
    stretch into blobs).

    Parameters
    ----------
    image : array-like, (H, W), (H, W, 3), (H, W, 4) or, with a channel, (H, W, C)
        A numpy array, or a lazy one (Zarr, Dask, tifffile's Zarr store): it is read only
        at a regular subsample and a central crop.
    config : NormalizeConfig or ModelConfig, optional
    """
    config = _config(config)
    sample, grey, lo, hi = _statistics(image, config)
    if sample.contrast(grey, lo, hi) < MIN_CONTRAST:
        return None
    return _scaling(sample, grey, lo, hi, config)


def contrast(image: np.ndarray, config: NormalizeConfig | ModelConfig | None = None) -> float:
    """How far an image's grey levels span beyond its noise: the percentile range of
    :func:`normalize` over the noise's standard deviation.

    The noise is the median magnitude of Immerkaer's Laplacian difference (robust
    to the edges of nuclei), and at least the quantisation noise of an integer
    image (1/sqrt(12) of a grey level). Compare with :data:`MIN_CONTRAST`.
    """
    sample, grey, lo, hi = _statistics(image, _config(config))
    return sample.contrast(grey, lo, hi)


def polarity(image: np.ndarray, config: NormalizeConfig | ModelConfig | None = None) -> Polarity:
    """The statistics the inversion rule decides on, for ``image`` (its ``config.channel``
    alone when one is chosen); ``.inverts`` is the rule's decision.

    Parameters
    ----------
    image : (H, W), (H, W, 3) or (H, W, 4) ndarray of any numeric dtype
    config : NormalizeConfig or ModelConfig, optional
        Its percentiles and channel; ``invert`` is not looked at.

    Raises
    ------
    ValueError
        As :func:`normalize`.
    """
    return _polarity(*_statistics(image, _config(config)))


def should_invert(image: np.ndarray, config: NormalizeConfig | ModelConfig | None = None) -> bool:
    """Whether :func:`normalize` inverts ``image`` (a bright background): the module's rule,
    or the config's ``invert`` when it is not "auto".

    Parameters
    ----------
    image : (H, W), (H, W, 3) or (H, W, 4) ndarray of any numeric dtype
    config : NormalizeConfig or ModelConfig, optional
    """
    config = _config(config)
    if config.invert != "auto":
        return config.invert == "always"
    return polarity(image, config).inverts


def _config(config: NormalizeConfig | ModelConfig | None) -> NormalizeConfig:
    return NormalizeConfig() if config is None else getattr(config, "normalization", config)


def _grey(image: np.ndarray) -> np.ndarray:
    """The mean of the channels: ``image.mean(axis=-1)`` of float32, value for value, at a
    tenth of its time (numpy reduces a last axis of 3 slowly)."""
    if image.ndim != 3:
        return image
    total = image[..., 0].copy()
    for c in range(1, image.shape[-1]):
        total += image[..., c]
    return total / np.float32(image.shape[-1])


def normalize(image: np.ndarray, config: NormalizeConfig | ModelConfig | None = None) -> np.ndarray:
    """Turn an image into network input: grey (or RGB), percentile-scaled, bright nuclei.

    Parameters
    ----------
    image : (H, W), (H, W, 3) or (H, W, 4) ndarray of any numeric dtype
        Grey or colour image as read (uint8, uint16, float); alpha is ignored.
        With ``config.channel`` set, (H, W, C) of any C: that channel is used alone.
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
        On a shape, dtype or value (NaN, inf) the function cannot use, or a
        ``config.channel`` the image does not have (the message gives its count).
    """
    config = _config(config)
    return _scaling(*_statistics(image, config), config).apply(image)


def network_input(
    image: np.ndarray, config: NormalizeConfig | ModelConfig | None = None
) -> np.ndarray | None:
    """:func:`normalize`, or None for an image without structure (a :func:`contrast` under
    :data:`MIN_CONTRAST`: flat, or noise alone, which scaling would stretch into blobs)."""
    found = scaling(image, config)
    return None if found is None else found.apply(image)
