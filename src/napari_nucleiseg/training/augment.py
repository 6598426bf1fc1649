"""Joint augmentation: one random affine warp for image and labels, then image-only jitter.

Flips, 90-degree turns, free rotation, shear, zoom and the crop position
(shift) are composed into ONE affine map from crop to source coordinates, and
that same map resamples the image (bilinear) and the instance labels (nearest
neighbour), so they cannot drift apart. Intensity, contrast, gamma and noise
then change the image only; stain jitter changes the raw colour image's
haematoxylin and eosin before normalisation. This is the only augmentation
module: training and tests use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.color import hed_from_rgb, rgb_from_hed

from ..kinds import is_colour


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random transforms (0 or 1 switches one off).

    Attributes
    ----------
    flip : bool
        Random horizontal and vertical flips.
    rot90 : bool
        Random multiples of 90 degrees.
    rotation : float
        Free rotation, uniform in +-``rotation`` degrees.
    shear : float
        Shear angle, uniform in +-``shear`` degrees.
    zoom : (float, float)
        Scale factor range, drawn log-uniformly (>1 magnifies).
    stretch : float
        Independent extra scale of the two axes, log-uniform in +-``stretch``.
    contrast : (float, float)
        Gain applied around the crop's mean.
    brightness : float
        Offset, uniform in +-``brightness`` (normalised units).
    gamma : (float, float)
        Gamma range, applied to the image clipped to [0, 1] (log-uniform).
    noise : float
        Maximum standard deviation of added Gaussian noise.
    blur : float
        Maximum Gaussian blur sigma (pixels), applied with probability 0.25.
    stain : float
        Stain jitter of raw colour images in haematoxylin-eosin space
        (:func:`jitter_stain`; 0 = off).
    """

    flip: bool = True
    rot90: bool = True
    rotation: float = 180.0
    shear: float = 10.0
    zoom: tuple[float, float] = (0.6, 1.6)
    stretch: float = 0.1
    contrast: tuple[float, float] = (0.7, 1.4)
    brightness: float = 0.1
    gamma: tuple[float, float] = (0.7, 1.5)
    noise: float = 0.03
    blur: float = 1.0
    stain: float = 0.2

    @classmethod
    def none(cls) -> AugmentConfig:
        """No augmentation at all: a plain random crop."""
        return cls(
            flip=False,
            rot90=False,
            rotation=0.0,
            shear=0.0,
            zoom=(1.0, 1.0),
            stretch=0.0,
            contrast=(1.0, 1.0),
            brightness=0.0,
            gamma=(1.0, 1.0),
            noise=0.0,
            blur=0.0,
            stain=0.0,
        )


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) if hi > lo else float(lo)


def random_matrix(rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """A random 2x2 map from crop to source (row, col) offsets: flips, turns, rotation, shear, zoom.

    Returns
    -------
    (2, 2) ndarray of float64
    """
    m = np.eye(2)
    if config.flip:
        m = np.diag(rng.choice([-1.0, 1.0], size=2)) @ m
    if config.rot90:
        k = int(rng.integers(4))
        m = np.linalg.matrix_power(np.array([[0.0, -1.0], [1.0, 0.0]]), k) @ m
    if config.rotation:
        a = np.deg2rad(rng.uniform(-config.rotation, config.rotation))
        m = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) @ m
    if config.shear:
        s = np.tan(np.deg2rad(rng.uniform(-config.shear, config.shear)))
        m = np.array([[1.0, s], [0.0, 1.0]]) @ m
    zoom = _log_uniform(rng, *config.zoom)
    sy = sx = 1.0 / zoom  # a crop pixel covers 1/zoom source pixels
    if config.stretch:
        sy *= _log_uniform(rng, 1 - config.stretch, 1 + config.stretch)
        sx *= _log_uniform(rng, 1 - config.stretch, 1 + config.stretch)
    return m @ np.diag([sy, sx])


def _validate_pair(image: np.ndarray, labels: np.ndarray) -> None:
    if image.ndim != 3:
        raise ValueError(f"image has shape {image.shape}; expected (C, H, W)")
    if labels.shape != image.shape[1:]:
        raise ValueError(
            f"labels are {labels.shape} but the image is {image.shape[1:]}; they must match"
        )


def warp(
    image: np.ndarray,
    labels: np.ndarray,
    matrix: np.ndarray,
    center: tuple[float, float],
    size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Resample a ``size`` x ``size`` crop of image and labels with the same affine map.

    Crop pixel ``o`` comes from source position ``matrix @ (o - c) + center``,
    where ``c`` is the crop's centre. Outside the source, both are mirrored.

    Parameters
    ----------
    image : (C, H, W) ndarray of float32
    labels : (H, W) ndarray of int
    matrix : (2, 2) ndarray
    center : (float, float)
        Source (row, col) that lands on the crop's centre.
    size : int

    Returns
    -------
    image : (C, size, size) ndarray of float32
        Bilinear.
    labels : (size, size) ndarray, the dtype of ``labels``
        Nearest neighbour.
    """
    _validate_pair(image, labels)
    c = np.full(2, (size - 1) / 2)
    offset = np.asarray(center, dtype=float) - matrix @ c
    kw = dict(matrix=matrix, offset=offset, output_shape=(size, size), mode="mirror")
    out = np.stack([ndi.affine_transform(ch, order=1, **kw) for ch in image]).astype(np.float32)
    lab = ndi.affine_transform(labels, order=0, **kw)
    return out, lab


def random_crop(
    image: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    config: AugmentConfig,
    size: int = 256,
    scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """A randomly placed, randomly transformed crop of image and labels (same warp for both).

    Small images are mirrored to fill the crop. Image-only jitter is applied
    after the warp (:func:`jitter_intensity`).

    Parameters
    ----------
    image : (C, H, W) ndarray of float32
        A normalised image.
    labels : (H, W) ndarray of int
        Its instance labels.
    rng : numpy Generator
    config : AugmentConfig
    size : int
        Crop side.
    scale : float
        Source pixels per crop pixel before the random zoom: the sample's nucleus
        diameter over the one the network is trained to see (1: as it is).

    Returns
    -------
    image : (C, size, size) ndarray of float32
    labels : (size, size) ndarray, the dtype of ``labels``
    """
    _validate_pair(image, labels)
    matrix = random_matrix(rng, config) * scale
    # keep the crop inside the source when the source is big enough (a shift)
    half = np.abs(matrix).sum(axis=1) * (size - 1) / 2
    center = []
    for extent, h in zip(image.shape[1:], half, strict=True):
        lo, hi = h, extent - 1 - h
        center.append(rng.uniform(lo, hi) if hi > lo else (extent - 1) / 2)
    out, lab = warp(image, labels, matrix, (center[0], center[1]), size)
    return jitter_intensity(out, rng, config), lab


def jitter_intensity(
    image: np.ndarray, rng: np.random.Generator, config: AugmentConfig
) -> np.ndarray:
    """Random contrast, brightness, gamma, blur and noise of a normalised image (labels untouched).

    Parameters
    ----------
    image : (C, H, W) ndarray of float32

    Returns
    -------
    (C, H, W) ndarray of float32
    """
    out = image.astype(np.float32, copy=True)
    gain = rng.uniform(*config.contrast)
    mean = out.mean()
    out = (out - mean) * np.float32(gain) + mean
    if config.brightness:
        out += np.float32(rng.uniform(-config.brightness, config.brightness))
    gamma = _log_uniform(rng, *config.gamma)
    if gamma != 1.0:
        out = np.clip(out, 0, 1) ** np.float32(gamma)
    if config.blur and rng.random() < 0.25:
        sigma = rng.uniform(0, config.blur)
        out = np.stack([ndi.gaussian_filter(ch, sigma) for ch in out])
    if config.noise:
        out += rng.normal(0, rng.uniform(0, config.noise), size=out.shape).astype(np.float32)
    return out.astype(np.float32, copy=False)


#: scikit-image's stain matrices (Ruifrok and Johnston), in float32
_HED_FROM_RGB = hed_from_rgb.astype(np.float32)
_RGB_FROM_HED = rgb_from_hed.astype(np.float32)


def jitter_stain(image: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """Change the amount of each stain of a raw colour image (haematoxylin, eosin, DAB space).

    The image is unmixed into stain densities (Ruifrok and Johnston's colour
    deconvolution with scikit-image's matrices; not :func:`skimage.color.rgb2hed` and
    ``hed2rgb`` themselves, whose round trip moved pixels by up to 55 grey levels and
    took 4x as long on a 1000x1000 tile, in float64); each stain is scaled by a
    factor in ``1 +- stain`` and shifted by up to ``stain`` times its standard
    deviation, then mixed back (Tellez et al. 2018's HED jitter): the colours of
    another lab's staining, with nuclei and labels untouched. Grey images (2-D,
    or channels all equal) are returned unchanged, so fluorescence is not tinted.

    Parameters
    ----------
    image : (H, W) or (H, W, 3) ndarray of uint8 (or any numeric dtype, 0-255)

    Returns
    -------
    (H, W) or (H, W, 3) ndarray of float32
        Alpha, if any, is dropped from colour images.
    """
    out = np.asarray(image, dtype=np.float32)
    if not config.stain or out.ndim != 3 or out.shape[-1] < 3:
        return out
    if not is_colour(out):
        return out
    rgb = out[..., :3]
    # optical density (0-255 mapped into (0, 1] so that black has a finite density)
    density = -np.log((np.clip(rgb, 0, 255) + 1) / np.float32(256))
    hed = density.reshape(-1, 3) @ _HED_FROM_RGB
    gains = rng.uniform(1 - config.stain, 1 + config.stain, size=3)
    shifts = rng.uniform(-config.stain, config.stain, size=3) * hed.std(axis=0)
    hed = hed * gains.astype(np.float32) + shifts.astype(np.float32)
    mixed = np.exp(-(hed @ _RGB_FROM_HED)) * 256 - 1
    return np.clip(mixed, 0, 255).reshape(rgb.shape).astype(np.float32)
