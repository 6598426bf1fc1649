"""Network maps <-> instance labels: training targets, and the seeded watershed that splits nuclei.

The 2018 DSB winners' recipe: the network predicts the nucleus *body* and the
*touching border* (pixels near two different nuclei); seeds are where the body
is sure and the border is not, and a watershed on the body probability grows
each seed back to the body mask. Where the network misses the gap between
touching nuclei, their merged seed still has a neck, which the optional shape
split cuts (a peak of the seed's distance transform per nucleus). Both
directions live here so that training and inference agree on what the maps mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import local_maxima, reconstruction
from skimage.segmentation import find_boundaries, watershed

#: names of the maps a model can predict, in the order they appear in its output
MAPS = ("body", "border", "contour")
_EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity


@dataclass(frozen=True)
class PostprocessConfig:
    """Thresholds of :func:`labels_from_maps`; defaults stored in every checkpoint.

    Attributes
    ----------
    prob_threshold : float
        Body probability above which a pixel belongs to a nucleus.
    seed_threshold : float
        ``body * (1 - border)`` above which a pixel is a seed.
    min_size : int
        Nuclei with fewer pixels are dropped.
    min_seed_size : int
        Seeds with fewer pixels are dropped (their pixels join a neighbour).
    split_depth : float
        Shape split: a seed whose distance transform has two or more domes
        that rise more than this many pixels above the neck between them is
        cut at the neck (touching nuclei whose border the network missed);
        other seeds are left as they are. 0 keeps every seed whole; the
        checkpoints of before this option have 0.
    """

    prob_threshold: float = 0.5
    seed_threshold: float = 0.7
    min_size: int = 10
    min_seed_size: int = 5
    split_depth: float = 0.0


def _validate_maps(body: np.ndarray, border: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    body = np.asarray(body, dtype=np.float32)
    if body.ndim != 2:
        raise ValueError(f"body map has shape {body.shape}; expected (H, W)")
    border = np.zeros_like(body) if border is None else np.asarray(border, dtype=np.float32)
    if border.shape != body.shape:
        raise ValueError(
            f"border map is {border.shape} but body map is {body.shape}; they must match"
        )
    return body, border


def labels_from_maps(
    body: np.ndarray, border: np.ndarray | None = None, post: PostprocessConfig | None = None
) -> np.ndarray:
    """Instance labels from body and border probabilities by a seeded watershed.

    Cheap (tens of milliseconds on 520x696), so that a viewer can re-run it
    whenever a threshold moves.

    Parameters
    ----------
    body : (H, W) ndarray of float
        Probability that a pixel is inside a nucleus.
    border : (H, W) ndarray of float, optional
        Probability that a pixel lies between touching nuclei (or on a
        contour); None splits by the body map alone.
    post : PostprocessConfig, optional
        The thresholds; None: its defaults.

    Returns
    -------
    (H, W) ndarray of uint16 (uint32 beyond 65,535 nuclei)
        Labels 1..N, 0 = background. A part of the mask that holds no seed
        becomes a nucleus of its own.
    """
    body, border = _validate_maps(body, border)
    post = post or PostprocessConfig()
    mask = body > post.prob_threshold
    seeds = (body * (1 - border) > post.seed_threshold) & mask
    seed_labels, _ = ndi.label(seeds)
    seed_labels = _drop_small(seed_labels, post.min_seed_size)
    if post.split_depth > 0:
        seed_labels = split_by_shape(seed_labels, post.split_depth)
    # mask components without a seed keep their own label
    comps, n_comps = ndi.label(mask)
    seeded = np.zeros(n_comps + 1, dtype=bool)
    seeded[np.unique(comps[seed_labels > 0])] = True
    orphan = ~seeded[comps] & mask
    if orphan.any():
        extra, _ = ndi.label(orphan)
        seed_labels = np.where(orphan, extra + seed_labels.max(), seed_labels)
    labels = watershed(flood_order(body, seed_labels), seed_labels, mask=mask)
    labels = _drop_small(labels, post.min_size)
    return _relabel(labels)


#: seed pixels ordered below any gap between two float32 probabilities of a seed (>= 2**-5)
_MAX_SEED_PIXELS = 2**24


def flood_order(body: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The watershed's priorities: the highest body probability first, and among seed pixels
    of one probability, the first in row-major order first.

    scikit-image floods pixels of equal priority in the order they were reached, except
    its markers (the seeds), which all start together and which its heap then orders by
    its own state: a state that holds every nucleus of the image, so that where
    probabilities saturate at 1.0 a clump's nuclei depended on the rest of the image.
    Lowering each seed pixel's priority by less than any gap between two float32
    probabilities, in row-major order, makes them depend on the clump alone, which is what
    post-processing in chunks needs to be exact (:mod:`napari_nucleiseg.stitch`).
    """
    key = -np.asarray(body, np.float64)
    marked = np.flatnonzero(seeds)
    if marked.size >= _MAX_SEED_PIXELS:
        raise ValueError(
            f"{marked.size} seed pixels are too many to post-process at once: "
            "use napari_nucleiseg.stitch (or large) for an image this size"
        )
    key.flat[marked] -= np.arange(marked.size, 0, -1) * 2.0**-52
    return key


def split_by_shape(seed_labels: np.ndarray, depth: float, sigma: float = 1.0) -> np.ndarray:
    """Seeds cut at their necks: a seed with two or more domes in its distance transform
    becomes one seed per dome; every other seed is left exactly as it was.

    Each seed is handled in its own bounding box, so memory stays bounded on
    huge images. A dome is a cap of the smoothed distance transform that rises
    more than ``depth`` above the saddle to any higher one (the regional maxima
    of the reconstruction of ``dist - depth`` under ``dist``): whole caps, not
    top pixels, so the tied top pixels of a symmetric shape make one dome.
    The cut follows the neck (a watershed on the distance inside the seed).

    Parameters
    ----------
    seed_labels : (H, W) ndarray of int
        Seeds, 0 = none.
    depth : float
        How far (pixels of distance) a dome must rise above its neck; lower cuts more.
    sigma : float
        Smoothing of the distance transform, so that a ragged outline makes no domes.

    Returns
    -------
    (H, W) ndarray of int64
        Seeds; the pieces of a cut seed keep its label for the first and take
        new labels above the highest one for the others.
    """
    out = np.asarray(seed_labels).astype(np.int64)
    next_label = int(out.max(initial=0)) + 1
    for label, box in enumerate(ndi.find_objects(out), start=1):
        if box is None:
            continue
        box = tuple(slice(max(b.start - 1, 0), b.stop + 1) for b in box)
        own = out[box] == label
        dist = ndi.gaussian_filter(ndi.distance_transform_edt(own).astype(np.float32), sigma)
        if dist.max() <= depth:  # too thin to hold a dome that high
            continue
        # one patch of 3x3 maxima means one regional maximum, so one dome: most seeds
        tops = (dist == ndi.maximum_filter(dist, size=3)) & own
        if ndi.label(tops, structure=_EIGHT)[1] < 2:
            continue
        domes = local_maxima(reconstruction(dist - depth, dist), connectivity=2) & own
        peaks, n = ndi.label(domes, structure=_EIGHT)
        if n < 2:
            continue
        pieces = watershed(-dist, peaks, mask=own)
        # piece 1 keeps the seed's label, pieces 2..n take new ones
        relabel = np.concatenate([[0, label], np.arange(next_label, next_label + n - 1)])
        out[box][own] = relabel[pieces[own]]
        next_label += n - 1
    return out


def _drop_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    if min_size <= 1 or labels.max() == 0:
        return labels
    sizes = np.bincount(labels.ravel())
    small = sizes < min_size
    small[0] = False
    return np.where(small[labels], 0, labels)


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Number the labels 1..N in the order they first appear (row-major)."""
    present = np.unique(labels)
    present = present[present > 0]
    lut = np.zeros(int(labels.max(initial=0)) + 1, dtype=np.uint32)
    lut[present] = np.arange(1, present.size + 1)
    dtype = np.uint16 if present.size <= np.iinfo(np.uint16).max else np.uint32
    return lut[labels].astype(dtype)


def _validate_labels(labels: np.ndarray, maps: Sequence[str]) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels have shape {labels.shape}; expected (H, W)")
    if not np.issubdtype(labels.dtype, np.integer) and labels.dtype != bool:
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    unknown = [m for m in maps if m not in MAPS]
    if unknown or not maps:
        raise ValueError(f"unknown maps {unknown or list(maps)}; choose from {', '.join(MAPS)}")
    return labels.astype(np.int64, copy=False)


def targets_from_labels(
    labels: np.ndarray, maps: Sequence[str] = ("body", "border"), border_width: int = 2
) -> np.ndarray:
    """Training targets from instance labels.

    Parameters
    ----------
    labels : (H, W) ndarray of int
        Instance labels, 0 = background.
    maps : sequence of {"body", "border", "contour"}
        Which maps, in this order. "body": inside a nucleus. "border": pixels
        (nucleus or background) within ``border_width`` of two different
        nuclei, i.e. where touching or nearly touching nuclei meet. "contour":
        the inner boundary pixels of every nucleus.
    border_width : int
        Radius (pixels) of the neighbourhood that must hold two nuclei.

    Returns
    -------
    (len(maps), H, W) ndarray of float32
        Values 0 or 1.
    """
    labels = _validate_labels(labels, maps)
    out = np.zeros((len(maps), *labels.shape), dtype=np.float32)
    for i, name in enumerate(maps):
        if name == "body":
            out[i] = labels > 0
        elif name == "border":
            out[i] = touching_border(labels, border_width)
        else:
            out[i] = find_boundaries(labels, mode="inner") & (labels > 0)
    return out


def touching_border(labels: np.ndarray, width: int = 2) -> np.ndarray:
    """Pixels whose disk of radius ``width`` holds two or more different nuclei.

    Parameters
    ----------
    labels : (H, W) ndarray of int
        Instance labels, 0 = background.

    Returns
    -------
    (H, W) ndarray of bool
    """
    labels = np.asarray(labels, dtype=np.int64)
    if labels.max(initial=0) == 0:
        return np.zeros(labels.shape, dtype=bool)
    r = max(int(width), 1)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    disk = yy**2 + xx**2 <= r * r
    big = np.iinfo(np.int64).max
    highest = ndi.maximum_filter(labels, footprint=disk, mode="constant", cval=0)
    lowest = ndi.minimum_filter(
        np.where(labels > 0, labels, big), footprint=disk, mode="constant", cval=big
    )
    return (highest > 0) & (lowest < big) & (highest != lowest)
