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

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import local_maxima, reconstruction
from skimage.segmentation import find_boundaries, watershed

#: names of the maps a model can predict, in the order they appear in its output
MAPS = ("body", "border", "contour")
_EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity
#: pixels of a canvas of :func:`split_by_shape`'s seeds (some 30 bytes each): bounds its memory
_CANVAS_PIXELS = 1 << 18


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
        Nuclei with fewer pixels are dropped (a fixed bound, not one drawn from the image,
        so that a large image post-processed a window at a time gives the whole image's
        nuclei exactly).
    min_mean_prob : float
        Nuclei whose mean body probability is below this are dropped: texture and debris
        that barely pass ``prob_threshold``, whatever their size (a bound on area would
        also drop small real nuclei). Every nucleus's mean is above ``prob_threshold``, so
        only a bound above it drops any. 0 keeps every one; the checkpoints of before this
        option have 0.
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
    min_mean_prob: float = 0.0

    def chosen(self, choices: Mapping[str, float] | None) -> PostprocessConfig:
        """These thresholds with a run's choices (any of :data:`THRESHOLDS`) in place of
        their own: a run's thresholds apply over each image's model, whose others stay."""
        if not choices:
            return self
        if unknown := set(choices) - set(THRESHOLDS):
            raise ValueError(f"a run sets only {', '.join(THRESHOLDS)}, not {sorted(unknown)}")
        return replace(self, **choices)


#: the thresholds a run may set over each model's own (``nucleiseg predict --min-size ...``)
THRESHOLDS = ("prob_threshold", "seed_threshold", "min_size", "min_mean_prob", "split_depth")


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
    seed_labels = drop_small(seed_labels, post.min_seed_size)
    if post.split_depth > 0:
        seed_labels = split_by_shape(seed_labels, post.split_depth)
    # mask components without a seed keep their own label
    comps, n_comps = ndi.label(mask)
    seeded = np.zeros(n_comps + 1, dtype=bool)
    seeded[comps[seed_labels > 0]] = True
    orphan = ~seeded[comps] & mask
    if orphan.any():
        extra, _ = ndi.label(orphan)
        seed_labels = np.where(orphan, extra + seed_labels.max(), seed_labels)
    labels = watershed(flood_order(body, seed_labels), seed_labels, mask=mask)
    return _relabel(drop_objects(labels, body, post))


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

    Each seed is handled in its own bounding box (padded by 1), so memory stays
    bounded on huge images. A dome is a cap of the smoothed distance transform
    that rises more than ``depth`` above the saddle to any higher one (the
    regional maxima of the reconstruction of ``dist - depth`` under ``dist``):
    whole caps, not top pixels, so the tied top pixels of a symmetric shape make
    one dome. The cut follows the neck (a watershed on the distance inside the
    seed). The steps whose Python overhead outweighs their arithmetic run on many
    boxes at once, packed side by side in canvases of bounded size
    (:func:`_split_candidates`, :func:`_dome_counts`), with the very results they
    give one box at a time.

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
    boxes, inner = {}, {}
    for label, box in enumerate(ndi.find_objects(out), start=1):
        if box is not None:
            boxes[label] = tuple(slice(max(b.start - 1, 0), b.stop + 1) for b in box)
            # a box clipped by the image edge lacks its ring of non-seed pixels there
            if all(0 < b.start and b.stop < n for b, n in zip(box, out.shape)):
                inner[label] = boxes[label]
    dists = _split_candidates(out, inner, depth, sigma)
    for label in boxes.keys() - inner.keys():
        own = out[boxes[label]] == label
        dist = ndi.gaussian_filter(ndi.distance_transform_edt(own).astype(np.float32), sigma)
        if _may_split(dist, own, depth):
            dists[label] = dist
    # the seeds that may split, in label order (the order of their new labels)
    labels = sorted(dists)
    owns = [out[boxes[label]] == label for label in labels]
    caps = [reconstruction(dists[label] - depth, dists[label]) for label in labels]
    for label, own, cap, n in zip(labels, owns, caps, _dome_counts(caps, owns)):
        if n < 2:
            continue
        peaks, n = ndi.label(local_maxima(cap, connectivity=2) & own, structure=_EIGHT)
        pieces = watershed(-dists[label], peaks, mask=own)
        # piece 1 keeps the seed's label, pieces 2..n take new ones
        relabel = np.concatenate([[0, label], np.arange(next_label, next_label + n - 1)])
        out[boxes[label]][own] = relabel[pieces[own]]
        next_label += n - 1
    return out


def _may_split(dist: np.ndarray, own: np.ndarray, depth: float) -> bool:
    """The two cheap tests that pass most seeds over: False for a seed too thin to hold a
    dome ``depth`` high, or with one patch of 3x3 maxima (one regional maximum, so one
    dome)."""
    if dist.max() <= depth:
        return False
    tops = (dist == ndi.maximum_filter(dist, size=3)) & own
    return ndi.label(tops, structure=_EIGHT)[1] >= 2


def _split_candidates(
    out: np.ndarray, boxes: dict[int, tuple[slice, slice]], depth: float, sigma: float
) -> dict[int, np.ndarray]:
    """Label -> smoothed distance transform over its box of each seed of ``boxes`` (boxes
    inside the image) that passes :func:`_may_split`; equal to those of one seed at a time.

    The boxes are packed side by side in a canvas for one distance transform: exact, as
    a box's ring of non-seed pixels holds the nearest zero of each of its pixels. They
    are packed again, each in a margin as wide as the Gaussian's reach that holds its
    distances reflected as ``gaussian_filter``'s "reflect" mode extends a lone box, for
    one Gaussian, so that every pixel of a box is smoothed from the same values in the
    same order as alone; the 3x3 maxima of a seed's pixels lie within its box.
    """
    # gaussian_filter's radius along each axis (truncate 4)
    ry, rx = (max(int(4.0 * float(s) + 0.5), 0) for s in np.broadcast_to(sigma, 2))
    labels = list(boxes)
    sizes = [tuple(b.stop - b.start for b in box) for box in boxes.values()]
    margined = [(h + 2 * ry, w + 2 * rx) for h, w in sizes]
    found = {}
    for shape, placed in _shelves(margined, _CANVAS_PIXELS):
        batch = [k for k, _, _ in placed]
        ((packed_shape, packed),) = _shelves([sizes[k] for k in batch])
        own = np.zeros(packed_shape, bool)
        corners = {}
        for i, y, x in packed:
            k = batch[i]
            (h, w), label, corners[k] = sizes[k], labels[k], (y, x)
            own[y : y + h, x : x + w] = out[boxes[label]] == label
        edt = ndi.distance_transform_edt(own).astype(np.float32)
        dist = np.zeros(shape, np.float32)
        owner = np.zeros(shape, np.int32)  # i + 1 on the seed of placed[i]
        inside = []
        for i, (k, y, x) in enumerate(placed):
            (h, w), (cy, cx) = sizes[k], corners[k]
            rows, cols = cy + _symmetric(h, ry), cx + _symmetric(w, rx)
            dist[y : y + h + 2 * ry, x : x + w + 2 * rx] = edt[rows[:, None], cols]
            box = (slice(y + ry, y + ry + h), slice(x + rx, x + rx + w))
            owner[box] = own[cy : cy + h, cx : cx + w] * (i + 1)
            inside.append(box)
        dist = ndi.gaussian_filter(dist, sigma)
        tops = (dist == ndi.maximum_filter(dist, size=3)) & (owner > 0)
        n_tops = _patches_per_box(tops, owner, len(placed))
        for i, (k, _, _) in enumerate(placed):
            box_dist = dist[inside[i]]
            if not box_dist.max() <= depth and n_tops[i] >= 2:
                found[labels[k]] = box_dist.copy()
    return found


def _dome_counts(caps: list[np.ndarray], owns: list[np.ndarray]) -> list[int]:
    """For each box, how many 8-connected patches ``local_maxima(cap, connectivity=2) & own``
    has, as the per-box calls give.

    The boxes are packed in canvases, each inside a ring of -inf, which local_maxima
    treats as it treats a lone box's edge (it pads that with the box's lowest value): but
    for a box flat all over, which has no maxima alone.
    """
    counts = [0] * len(caps)
    sizes = [(h + 2, w + 2) for h, w in (cap.shape for cap in caps)]
    for shape, placed in _shelves(sizes, _CANVAS_PIXELS):
        canvas = np.full(shape, -np.inf, np.float32)
        owner = np.zeros(shape, np.int32)  # i + 1 on the seed of placed[i]
        for i, (k, y, x) in enumerate(placed):
            box = (slice(y + 1, y + sizes[k][0] - 1), slice(x + 1, x + sizes[k][1] - 1))
            canvas[box] = caps[k]
            owner[box] = owns[k] * (i + 1)
        domes = local_maxima(canvas, connectivity=2) & (owner > 0)
        for (k, _, _), n in zip(placed, _patches_per_box(domes, owner, len(placed))):
            counts[k] = 0 if caps[k].min() == caps[k].max() else int(n)
    return counts


def _patches_per_box(mask: np.ndarray, owner: np.ndarray, n_boxes: int) -> np.ndarray:
    """How many 8-connected patches of ``mask`` each box of a canvas holds; ``owner`` is
    k + 1 on the seed pixels of box k, and nonzero wherever ``mask`` is (seed pixels of two
    boxes never touch, so no patch spans two boxes)."""
    patches, n = ndi.label(mask, structure=_EIGHT)
    box_of = np.zeros(n + 1, np.int64)
    box_of[patches[mask]] = owner[mask]
    return np.bincount(box_of[1:], minlength=n_boxes + 1)[1:]


@functools.lru_cache(maxsize=256)
def _symmetric(n: int, reach: int) -> np.ndarray:
    """Indices into an axis of length ``n`` of its positions ``-reach..n+reach-1`` extended
    as scipy.ndimage's "reflect" mode extends it (numpy's "symmetric"), repeatedly where
    ``reach`` exceeds ``n``."""
    index = np.arange(-reach, n + reach) % (2 * n)
    index = np.where(index < n, index, 2 * n - 1 - index)
    index.flags.writeable = False  # shared by the cache
    return index


def _shelves(sizes: list[tuple[int, int]], limit: int = 2**62):
    """Rectangles of ``sizes`` (height, width) packed in rows ("shelves"), tallest first,
    in canvases of about ``limit`` pixels at most (more only for one rectangle that
    large); yields each canvas's shape and its ``(index, y, x)`` placements."""
    if not sizes:
        return
    width = max(max(w for _, w in sizes), math.isqrt(min(sum(h * w for h, w in sizes), limit)))
    placed, y, x, shelf = [], 0, 0, 0
    for k in sorted(range(len(sizes)), key=lambda k: -sizes[k][0]):
        h, w = sizes[k]
        if x + w > width:  # the next shelf
            y, x, shelf = y + shelf, 0, 0
            if (y + h) * width > limit:  # the next canvas
                yield (y, width), placed
                placed, y = [], 0
        placed.append((k, y, x))
        x, shelf = x + w, max(shelf, h)
    yield (y + shelf, width), placed


def drop_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """``labels`` without the objects of fewer than ``min_size`` pixels (numbers unchanged)."""
    if min_size <= 1 or labels.max() == 0:
        return labels
    sizes = np.bincount(labels.ravel())
    small = sizes < min_size
    small[0] = False
    return np.where(small[labels], 0, labels)


def drop_objects(labels: np.ndarray, body: np.ndarray, post: PostprocessConfig) -> np.ndarray:
    """``labels`` without the nuclei ``post`` drops: smaller than ``min_size``, or of a mean
    ``body`` probability under ``min_mean_prob`` (numbers unchanged)."""
    return drop_unsure(drop_small(labels, post.min_size), body, post.min_mean_prob)


def drop_unsure(labels: np.ndarray, body: np.ndarray, min_mean_prob: float) -> np.ndarray:
    """``labels`` without the objects whose mean ``body`` probability is under ``min_mean_prob``
    (numbers unchanged)."""
    if min_mean_prob <= 0 or labels.max() == 0:
        return labels
    flat = labels.ravel()
    sizes = np.bincount(flat)
    sums = np.bincount(flat, weights=np.asarray(body, np.float64).ravel(), minlength=sizes.size)
    unsure = sums < min_mean_prob * sizes  # mean < bound, without dividing by empty numbers
    unsure[0] = False
    return np.where(unsure[labels], 0, labels)


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Number the labels 1..N in the order they first appear (row-major)."""
    present = np.flatnonzero(np.bincount(labels.ravel())[1:]) + 1  # np.unique, 5x faster
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
