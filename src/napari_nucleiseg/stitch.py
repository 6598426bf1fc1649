"""Instance labels of maps too large to post-process at once, chunk by chunk, exactly as at once.

Why chunks can give exactly the nuclei of the whole: everything
:func:`~napari_nucleiseg.postprocess.labels_from_maps` does happens inside one
connected component of the mask (``body > prob_threshold``). Seeds lie in it,
the watershed grows them within it, the shape split and the size and mean-probability
filters work seed by seed and nucleus by nucleus, and a part without a seed is a nucleus of
its own. So a component's nuclei are the same in any window that holds the
whole component with a pixel to spare (or reaching the image's border where
the window does).

Each chunk is post-processed in a window wider by ``halo`` on every side, and
writes its own pixels: those of the components that do not touch the window's
cut edges (the others' pixels are marked open). A component that does (one
larger than the halo: a clump of nuclei) is resolved afterwards in a window
grown until it holds the component whole. A nucleus is named by its first
pixel in row-major order, the same in every window; a last pass numbers the
nuclei 1..N in that order, which is :func:`canonical` of the labels of the whole.

A clump whose window would pass :data:`MAX_CLUMP_PIXELS` (confluent tissue, or a
threshold too low, can connect a whole slide) is not held at once: each chunk
holding its open pixels post-processes a window ``reach`` wider, and writes the
nuclei whose first pixel is in the chunk, on the pixels still open. That is
exact for nuclei well inside a piece; where pieces meet, a nucleus may differ
from the whole image's, and pixels no piece claims are left to the background.
A :class:`ClumpWarning` says how many pieces wrote nuclei.

Memory is set by the chunk, the halo and :data:`MAX_CLUMP_PIXELS`, not the image.
"""

from __future__ import annotations

import functools
import threading
import warnings
from collections.abc import Generator

import numpy as np
from scipy import ndimage as ndi

from .postprocess import PostprocessConfig, labels_from_maps

Box = tuple[int, int, int, int]  # rows y0:y1, columns x0:x1
#: the largest window a clump is resolved in at once: 8 M pixels, some 57 bytes of
#: post-processing a pixel plus 12 of maps: about 550 MB (4096x4096 took a 32768x32768 run to
#: 2.3 GB); as the window's margins double, a clump over about 2,000 px across (confluent
#: tissue, a threshold too low) is resolved in pieces
MAX_CLUMP_PIXELS = 2048 * 4096


class ClumpWarning(UserWarning):
    """Touching nuclei connected over more than :data:`MAX_CLUMP_PIXELS` were resolved in
    overlapping pieces: where the pieces meet, nuclei may differ from a whole-image run."""


def open_mark(dtype) -> int:
    """The value of pixels left to a clump's own window: the largest of ``dtype``, which no
    nucleus (named by its first pixel's index + 1) reaches in an image of fewer pixels."""
    return int(np.iinfo(dtype).max)


def fits(dtype, height: int, width: int) -> bool:
    """Whether labels of ``dtype`` can name every nucleus of ``height x width`` and mark the
    open pixels."""
    return height * width < open_mark(dtype)


def canonical(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 1..N in the order of each nucleus's first pixel (row-major): two
    label images hold the same nuclei exactly when their canonical forms are equal."""
    labels = np.asarray(labels)
    present, first = np.unique(labels.ravel(), return_index=True)
    keep = present > 0
    present, first = present[keep], first[keep]
    lut = np.zeros(int(labels.max(initial=0)) + 1, np.uint32)
    lut[present[np.argsort(first)]] = np.arange(1, present.size + 1, dtype=np.uint32)
    return lut[labels]


def _maps(maps, box: Box) -> tuple[np.ndarray, np.ndarray | None]:
    """The body map and the separating maps' maximum (as
    :func:`~napari_nucleiseg.pipeline.labels_from_predicted` takes them) in ``box``."""
    y0, y1, x0, x1 = box
    region = np.asarray(maps[:, y0:y1, x0:x1], np.float32)
    return region[0], (region[1:].max(axis=0) if len(region) > 1 else None)


def _window(maps, box: Box, post: PostprocessConfig):
    """Post-process one window: nucleus ids (first pixel's row-major index in the whole
    image, plus 1), the mask's components, and those components that touch a cut edge."""
    height, width = maps.shape[1:]
    y0, y1, x0, x1 = box
    body, border = _maps(maps, box)
    labels = labels_from_maps(body, border, post)
    comps, _ = ndi.label(body > post.prob_threshold)
    edges = []
    if y0 > 0:
        edges.append(comps[0])
    if y1 < height:
        edges.append(comps[-1])
    if x0 > 0:
        edges.append(comps[:, 0])
    if x1 < width:
        edges.append(comps[:, -1])
    cut = np.unique(np.concatenate(edges)) if edges else np.zeros(0, comps.dtype)
    cut = cut[cut > 0]
    present, first = np.unique(labels.ravel(), return_index=True)
    row, col = np.divmod(first.astype(np.int64), x1 - x0)
    lut = np.zeros(int(present.max(initial=0)) + 1, np.uint64)
    lut[present] = ((y0 + row) * width + (x0 + col) + 1).astype(np.uint64)
    lut[0] = 0
    return lut[labels], comps, cut


def _boxes(comps: np.ndarray, which: np.ndarray, origin: tuple[int, int]) -> list[Box]:
    """Bounding boxes, in the whole image, of the components ``which`` of ``comps``."""
    found = ndi.find_objects(comps, max_label=int(which.max(initial=0)))
    oy, ox = origin
    return [
        (oy + s[0].start, oy + s[0].stop, ox + s[1].start, ox + s[1].stop)
        for s in (found[i - 1] for i in which)
        if s is not None
    ]


def _area(box: Box) -> int:
    return (box[1] - box[0]) * (box[3] - box[2])


def _union(a: Box, b: Box) -> Box:
    return min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])


def _grow(box: Box, by: int, height: int, width: int) -> Box:
    y0, y1, x0, x1 = box
    return max(y0 - by, 0), min(y1 + by, height), max(x0 - by, 0), min(x1 + by, width)


def chunk_boxes(height: int, width: int, chunk: int) -> list[Box]:
    """The chunks of a ``height x width`` image, row by row."""
    return [
        (y, min(y + chunk, height), x, min(x + chunk, width))
        for y in range(0, height, chunk)
        for x in range(0, width, chunk)
    ]


def stitched_labels(
    maps,
    out,
    post: PostprocessConfig | None = None,
    *,
    chunk: int = 1024,
    halo: int = 128,
    reach: int | None = None,
    stop: threading.Event | None = None,
) -> Generator[tuple[int, int], None, int]:
    """Write into ``out`` the labels of ``maps``, chunk by chunk; :func:`canonical` of
    ``labels_from_maps`` of the whole maps, exactly.

    Parameters
    ----------
    maps : array-like, (M, H, W) float32
        Body first, then the separating maps (numpy, or Zarr on disk: read by window).
    out : array-like, (H, W), uint32 (uint64 for images of 2**32 - 1 pixels or more)
        Zeros; written chunk by chunk (a Zarr array on disk, or numpy); see :func:`fits`.
    post : PostprocessConfig, optional
        Thresholds; None: the defaults.
    chunk : int
        Side of the chunks; best a multiple of ``out``'s own chunks.
    halo : int
        Context on every side of a chunk: components (clumps of nuclei) up to about this
        size are resolved in their chunk's window, larger ones in a window of their own.
    reach : int, optional
        Context on every side of a piece of a clump beyond :data:`MAX_CLUMP_PIXELS`:
        nuclei up to about this size are whole in their piece; None: ``4 * halo``.
    stop : threading.Event, optional
        Checked between windows; when set, the function stops with ``out`` half written
        and raises :class:`~napari_nucleiseg.pipeline.Cancelled`.

    Yields
    ------
    (done, total) : (int, int)
        Windows done and to do (the total grows when clumps are found).

    Returns
    -------
    int
        The number of nuclei.
    """
    from .pipeline import Cancelled

    post = post or PostprocessConfig()
    if chunk < 1 or halo < 1 or (reach is not None and reach < halo):
        raise ValueError(
            f"chunk and halo must be at least 1 and reach at least halo, got {chunk}, {halo} "
            f"and {reach}"
        )
    height, width = maps.shape[1:]
    if not fits(out.dtype, height, width):
        raise ValueError(f"labels of {out.dtype} cannot name the nuclei of {height}x{width}")
    mark = open_mark(out.dtype)
    chunks = chunk_boxes(height, width, chunk)
    total = 2 * len(chunks)
    found: list[np.ndarray] = []
    clumps: list[Box] = []
    holding: list[Box] = []  # chunks with open pixels
    for done, core in enumerate(chunks, start=1):
        if stop is not None and stop.is_set():
            raise Cancelled
        window = _grow(core, halo, height, width)
        ids, comps, cut = _window(maps, window, post)
        inner = np.s_[
            core[0] - window[0] : core[1] - window[0], core[2] - window[2] : core[3] - window[2]
        ]
        open_ = np.isin(comps[inner], cut)
        mine = ids[inner]
        found.append(np.unique(mine[~open_]))
        if open_.any():
            holding.append(core)
            mine = np.where(open_, mark, mine)
        out[core[0] : core[1], core[2] : core[3]] = mine.astype(out.dtype)
        clumps += _boxes(comps, np.unique(comps[inner][open_]), (window[0], window[2]))
        yield done, total
    # each view on its own: merging views that overlap could chain small clumps into a
    # window as large as the image
    groups = sorted(set(clumps))
    total += len(groups)
    beyond = []
    for done, group in enumerate(groups, start=len(chunks) + 1):
        if stop is not None and stop.is_set():
            raise Cancelled
        written, left_open = _resolve(maps, out, group, post, halo)
        found.append(written)
        if left_open:
            beyond.append(group)
        yield done, total
    pieces = holding if beyond else []
    total += len(pieces)
    reach = 4 * halo if reach is None else reach
    worked = 0
    for done, core in enumerate(pieces, start=len(chunks) + len(groups) + 1):
        if stop is not None and stop.is_set():
            raise Cancelled
        written = _piece(maps, out, core, post, reach)
        found.append(written)
        worked += written.size > 0
        yield done, total
    if worked:  # a clump that a later group's window held whole needed no piece
        y0, y1, x0, x1 = beyond[0]
        warnings.warn(
            f"touching nuclei connected over more than {MAX_CLUMP_PIXELS} pixels (met first "
            f"near rows {y0}-{y1}, columns {x0}-{x1}) were resolved in {worked} "
            "overlapping pieces: where the pieces meet, nuclei may differ from a whole-image "
            "run; a higher probability threshold separates them",
            ClumpWarning,
            stacklevel=2,
        )
    names = np.unique(np.concatenate(found))
    names = names[(names > 0) & (names != mark)]
    start = len(chunks) + len(groups) + len(pieces) + 1
    for done, core in enumerate(chunks, start=start):
        y0, y1, x0, x1 = core
        ids = np.asarray(out[y0:y1, x0:x1])
        rank = np.searchsorted(names, ids) + 1
        out[y0:y1, x0:x1] = np.where((ids > 0) & (ids != mark), rank, 0).astype(out.dtype)
        yield done, total
    return int(names.size)


def _resolve(maps, out, group: Box, post: PostprocessConfig, halo: int) -> tuple[np.ndarray, bool]:
    """Write the clumps that cross ``group`` whole, in a window grown until none is cut or
    until it would pass :data:`MAX_CLUMP_PIXELS`; return the ids written and whether a clump
    was left open (to :func:`_piece`)."""
    height, width = maps.shape[1:]
    window, by = _grow(group, 1, height, width), halo  # within a chunk's window: it fits
    beyond = False
    while True:
        ids, comps, cut = _window(maps, window, post)
        inner = np.s_[
            group[0] - window[0] : group[1] - window[0], group[2] - window[2] : group[3] - window[2]
        ]
        crossing = np.intersect1d(cut, comps[inner])
        if crossing.size == 0:
            break
        wanted = functools.reduce(_union, _boxes(comps, crossing, (window[0], window[2])), window)
        grown = _grow(wanted, by, height, width)
        if _area(grown) > MAX_CLUMP_PIXELS:  # margins double: a clump resolved whole is
            beyond = True  # at most about 2,000 px across; what this window holds is written
            break
        window, by = grown, 2 * by
    whole = (comps > 0) & ~np.isin(comps, cut)  # its dropped pixels too: no longer open
    y0, y1, x0, x1 = window
    current = np.asarray(out[y0:y1, x0:x1])
    out[y0:y1, x0:x1] = np.where(whole, ids, current).astype(out.dtype)
    return np.unique(ids[whole & (ids > 0)]), beyond


def _piece(maps, out, core: Box, post: PostprocessConfig, reach: int) -> np.ndarray:
    """Write, on the open pixels of a clump beyond :data:`MAX_CLUMP_PIXELS`, the nuclei whose
    first pixel lies in ``core``, post-processed in ``core`` grown by ``reach``; return the
    ids written. Only this piece names nuclei by a pixel of ``core``: no id is written twice."""
    height, width = maps.shape[1:]
    mark = open_mark(out.dtype)
    if not (np.asarray(out[core[0] : core[1], core[2] : core[3]]) == mark).any():
        return np.zeros(0, np.uint64)  # claimed by the pieces before
    y0, y1, x0, x1 = window = _grow(core, reach, height, width)
    current = np.asarray(out[y0:y1, x0:x1])
    is_open = current == mark
    ids, _, _ = _window(maps, window, post)
    row, col = np.divmod(ids.astype(np.int64) - 1, width)  # each pixel's nucleus's first pixel
    take = (ids > 0) & (row >= core[0]) & (row < core[1]) & (col >= core[2]) & (col < core[3])
    take &= is_open
    current[take] = ids[take]
    out[y0:y1, x0:x1] = current
    return np.unique(ids[take])
