"""Corrections of a label image (delete, merge, split, fill holes, clean up) and what they changed.

Every correction takes a 2-D label image (0 = background, one positive integer
per nucleus) and returns a new one of the same shape and dtype; the input is
never modified. The napari widget applies the difference to its layer, so that
napari's own undo history records each operation as one step.
:func:`compare_labels` counts the nuclei a series of corrections added,
removed and changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import line as draw_line
from skimage.segmentation import relabel_sequential, watershed

__all__ = [
    "LabelChanges",
    "compact_labels",
    "compare_labels",
    "delete_labels",
    "fill_holes",
    "label_at",
    "merge_labels",
    "next_free_label",
    "remove_small",
    "renumber",
    "split_label",
    "split_label_along_line",
]


def _validate_labels(labels: np.ndarray) -> np.ndarray:
    """Check that ``labels`` is a 2-D array of non-negative integers; return it as an ndarray."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be a 2-D image, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.size and np.issubdtype(labels.dtype, np.signedinteger) and labels.min() < 0:
        raise ValueError("labels must not be negative")
    return labels


def _as_ids(ids: int | Iterable[int]) -> list[int]:
    ids = [int(ids)] if np.isscalar(ids) else [int(i) for i in ids]
    if any(i <= 0 for i in ids):
        raise ValueError(f"label ids must be positive (0 is background), got {ids}")
    return ids


def _check_present(labels: np.ndarray, ids: Sequence[int]) -> None:
    missing = [i for i in ids if not np.any(labels == i)]
    if missing:
        raise ValueError(f"label(s) {', '.join(map(str, missing))} not in the image")


def _point(point: Sequence[float], shape: tuple[int, ...]) -> tuple[int, int]:
    """Round a (row, col) point to a pixel inside ``shape``."""
    r, c = (int(round(float(v))) for v in point[-2:])
    if not (0 <= r < shape[0] and 0 <= c < shape[1]):
        raise ValueError(f"point ({r}, {c}) lies outside the {shape[0]}x{shape[1]} image")
    return r, c


def compact_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels as small indices 0..K (0 stays background), and the label of each index.

    Labels up to about the number of pixels pass through unchanged; sparse
    large ones (e.g. 4e9) are mapped, so that per-label tables stay small.

    Parameters
    ----------
    labels : (H, W) ndarray of int

    Returns
    -------
    compact : (H, W) ndarray of int
    values : (K + 1,) ndarray of int
        ``values[compact] == labels``; ``values[0] == 0``.
    """
    top = int(labels.max(initial=0))
    if top <= max(1 << 20, labels.size):
        return labels, np.arange(top + 1)
    values, inverse = np.unique(labels, return_inverse=True)
    if values[0] != 0:
        values, inverse = np.concatenate([[0], values]), inverse + 1
    return inverse.reshape(labels.shape), values


def label_at(labels: np.ndarray, point: Sequence[float]) -> int:
    """The label under a (row, col) point; 0 on background.

    Parameters
    ----------
    labels : (H, W) ndarray of int
    point : sequence of float
        (row, col) in pixels; extra leading coordinates are ignored.

    Raises
    ------
    ValueError
        If the point lies outside the image.
    """
    labels = _validate_labels(labels)
    return int(labels[_point(point, labels.shape)])


def next_free_label(labels: np.ndarray) -> int:
    """The label one above the largest in use: paint a new nucleus with it.

    Parameters
    ----------
    labels : (H, W) ndarray of int

    Returns
    -------
    int

    Raises
    ------
    ValueError
        If the label does not fit the array's dtype (renumber first).
    """
    labels = _validate_labels(labels)
    label = int(labels.max(initial=0)) + 1
    if label > np.iinfo(labels.dtype).max:
        raise ValueError(
            f"label {label} does not fit {labels.dtype}; renumber the labels sequentially first"
        )
    return label


def delete_labels(labels: np.ndarray, ids: int | Iterable[int]) -> np.ndarray:
    """Set the pixels of the given labels to background.

    Parameters
    ----------
    labels : (H, W) ndarray of int
    ids : int or iterable of int
        Labels to delete; ones not in the image are ignored.

    Returns
    -------
    (H, W) ndarray, the dtype of ``labels``
    """
    labels = _validate_labels(labels)
    out = labels.copy()
    out[np.isin(labels, _as_ids(ids))] = 0
    return out


def merge_labels(labels: np.ndarray, ids: Iterable[int], into: int | None = None) -> np.ndarray:
    """Merge nuclei into one: the union of their pixels gets one label.

    Parameters
    ----------
    labels : (H, W) ndarray of int
    ids : iterable of int
        At least two labels present in the image.
    into : int, optional
        The label of the merged nucleus; the smallest of ``ids`` by default.

    Returns
    -------
    (H, W) ndarray, the dtype of ``labels``

    Raises
    ------
    ValueError
        Fewer than two distinct labels, or a label not in the image.
    """
    labels = _validate_labels(labels)
    ids = sorted(set(_as_ids(ids)))
    if len(ids) < 2:
        raise ValueError(f"merging needs two different nuclei, got {ids}")
    _check_present(labels, ids)
    into = ids[0] if into is None else int(into)
    out = labels.copy()
    out[np.isin(labels, ids)] = into
    return out


def _new_label(labels: np.ndarray, new_label: int | None) -> int:
    if new_label is None:
        return next_free_label(labels)
    new_label = int(new_label)
    if new_label <= 0 or new_label > np.iinfo(labels.dtype).max:
        raise ValueError(f"new label {new_label} is not a valid label for {labels.dtype}")
    if np.any(labels == new_label):
        raise ValueError(f"new label {new_label} is already in use")
    return new_label


def _bbox(mask: np.ndarray, margin: int = 1) -> tuple[slice, slice]:
    rows, cols = np.nonzero(mask)
    return (
        slice(max(int(rows.min()) - margin, 0), int(rows.max()) + margin + 1),
        slice(max(int(cols.min()) - margin, 0), int(cols.max()) + margin + 1),
    )


def split_label(
    labels: np.ndarray,
    seeds: Sequence[Sequence[float]],
    new_label: int | None = None,
) -> np.ndarray:
    """Split one nucleus in two with a distance-transform watershed from two seeds.

    Parameters
    ----------
    labels : (H, W) ndarray of int
    seeds : two (row, col) points
        Both inside the same nucleus, on different pixels (e.g. the centres of
        the two halves the user clicks).
    new_label : int, optional
        The label of the second half; the next free label by default. The half
        around the first seed keeps the nucleus's label.

    Returns
    -------
    (H, W) ndarray, the dtype of ``labels``

    Raises
    ------
    ValueError
        Not two seeds, a seed on background or outside the image, seeds on
        different nuclei or on the same pixel.
    """
    labels = _validate_labels(labels)
    if len(seeds) != 2:
        raise ValueError(f"splitting needs two seed points, got {len(seeds)}")
    points = [_point(s, labels.shape) for s in seeds]
    if points[0] == points[1]:
        raise ValueError("the two seeds lie on the same pixel")
    values = {int(labels[p]) for p in points}
    if 0 in values:
        raise ValueError("a seed lies on background; click inside the nucleus to split")
    if len(values) != 1:
        raise ValueError(f"the seeds lie on different nuclei ({sorted(values)}); click one")
    label = values.pop()
    new_label = _new_label(labels, new_label)
    box = _bbox(labels == label)
    region = labels[box] == label
    markers = np.zeros(region.shape, np.int32)
    for k, (r, c) in enumerate(points, start=1):
        markers[r - box[0].start, c - box[1].start] = k
    distance = ndi.distance_transform_edt(region)
    halves = watershed(-distance, markers, mask=region)
    out = labels.copy()
    out[box][halves == 2] = new_label
    return out


def split_label_along_line(
    labels: np.ndarray,
    line: Sequence[Sequence[float]],
    new_label: int | None = None,
) -> np.ndarray:
    """Split the nucleus a drawn line crosses into the two parts on either side.

    The line (a polyline of two or more (row, col) points) is rasterised; the
    nucleus it covers most is cut along it, the two largest pieces become the
    two nuclei, and the line's own pixels (and any crumbs) go to the nearer one.

    Parameters
    ----------
    labels : (H, W) ndarray of int
    line : sequence of (row, col) points
        Two or more vertices, in pixels; they may lie outside the image.
    new_label : int, optional
        The label of the smaller part; the next free label by default.

    Returns
    -------
    (H, W) ndarray, the dtype of ``labels``

    Raises
    ------
    ValueError
        Fewer than two points, a line that crosses no nucleus, or one that
        does not cut it in two.
    """
    labels = _validate_labels(labels)
    if len(line) < 2:
        raise ValueError("a split line needs at least two points")
    h, w = labels.shape
    vertices = [(int(round(float(p[-2]))), int(round(float(p[-1])))) for p in line]
    rr, cc = [], []
    for (r0, c0), (r1, c1) in zip(vertices[:-1], vertices[1:]):
        r, c = draw_line(r0, c0, r1, c1)
        rr.append(r)
        cc.append(c)
    rr, cc = np.concatenate(rr), np.concatenate(cc)
    inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
    rr, cc = rr[inside], cc[inside]
    crossed = labels[rr, cc]
    crossed = crossed[crossed != 0]
    if crossed.size == 0:
        raise ValueError("the line crosses no nucleus")
    label = int(np.bincount(crossed).argmax())
    new_label = _new_label(labels, new_label)
    box = _bbox(labels == label)
    region = labels[box] == label
    cut = np.zeros_like(region)
    keep = (rr >= box[0].start) & (rr < box[0].stop) & (cc >= box[1].start) & (cc < box[1].stop)
    cut[rr[keep] - box[0].start, cc[keep] - box[1].start] = True
    # 4-connected pieces: a one-pixel 8-connected line separates them.
    pieces, n = ndi.label(region & ~cut)
    if n < 2:
        raise ValueError(f"the line does not cut nucleus {label} in two; draw it across")
    sizes = np.bincount(pieces.ravel())[1:]
    largest = np.argsort(sizes)[::-1][:2] + 1
    markers = np.zeros(region.shape, np.int32)
    markers[pieces == largest[0]] = 1
    markers[pieces == largest[1]] = 2
    parts = watershed(np.zeros(region.shape, np.uint8), markers, mask=region)
    out = labels.copy()
    out[box][parts == 2] = new_label
    return out


def fill_holes(labels: np.ndarray, ids: Iterable[int] | None = None) -> np.ndarray:
    """Fill the background holes inside each nucleus.

    Only background pixels are filled: another nucleus inside a hole stays.

    Parameters
    ----------
    labels : (H, W) ndarray of int
    ids : iterable of int, optional
        The nuclei to fill; all by default.

    Returns
    -------
    (H, W) ndarray, the dtype of ``labels``
    """
    labels = _validate_labels(labels)
    wanted = None if ids is None else set(_as_ids(ids))
    compact, values = compact_labels(labels)
    out = labels.copy()
    for index, box in enumerate(ndi.find_objects(compact), start=1):
        label = int(values[index])
        if box is None or (wanted is not None and label not in wanted):
            continue
        window = out[box]
        mask = compact[box] == index
        filled = ndi.binary_fill_holes(mask)
        window[filled & ~mask & (window == 0)] = label
    return out


def remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Delete the nuclei with fewer than ``min_size`` pixels.

    Parameters
    ----------
    labels : (H, W) ndarray of int
    min_size : int
        Nuclei of at least this many pixels stay.

    Returns
    -------
    (H, W) ndarray, the dtype of ``labels``
    """
    labels = _validate_labels(labels)
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0, got {min_size}")
    values, sizes = np.unique(labels, return_counts=True)
    small = values[(sizes < min_size) & (values != 0)]
    out = labels.copy()
    if small.size:
        out[np.isin(labels, small)] = 0
    return out


def renumber(labels: np.ndarray) -> tuple[np.ndarray, dict[int, int]]:
    """Renumber the labels 1..N, keeping their order.

    Parameters
    ----------
    labels : (H, W) ndarray of int

    Returns
    -------
    relabelled : (H, W) ndarray, the dtype of ``labels``
    mapping : dict of int to int
        Old label -> new label, for every label in use.
    """
    labels = _validate_labels(labels)
    relabelled, forward, _ = relabel_sequential(labels)
    old = np.unique(labels)
    old = old[old != 0]
    mapping = {int(o): int(forward[o]) for o in old}
    return relabelled.astype(labels.dtype, copy=False), mapping


@dataclass(frozen=True)
class LabelChanges:
    """How a label image differs from the original, nucleus by nucleus.

    A current nucleus is *unchanged* when its pixels are exactly those of one
    original nucleus (its label number may differ). The others are paired one
    to one with the original nuclei that are not unchanged, largest overlap
    first: a paired nucleus is *changed*, an unpaired current one *added*, an
    unpaired original one *removed*. Deleting a nucleus counts one removed;
    merging two, one changed and one removed; splitting one, one changed and
    one added; painting a new one, one added; renumbering, nothing.

    Attributes
    ----------
    added, removed, changed, unchanged : int
    same : dict of int to int
        Current label -> original label, for the unchanged nuclei.
    """

    added: int
    removed: int
    changed: int
    unchanged: int
    same: dict[int, int] = field(default_factory=dict, repr=False, compare=False)

    @property
    def total(self) -> int:
        """Added + removed + changed: 0 when nothing was edited."""
        return self.added + self.removed + self.changed


def _areas(labels: np.ndarray) -> np.ndarray:
    return np.bincount(labels.ravel().astype(np.intp, copy=False))


def compare_labels(current: np.ndarray, original: np.ndarray | None) -> LabelChanges:
    """Count the nuclei added, removed and changed between two label images.

    Parameters
    ----------
    current : (H, W) ndarray of int
        The corrected labels.
    original : (H, W) ndarray of int, or None
        The labels as segmented or loaded; None counts every nucleus as added.

    Returns
    -------
    LabelChanges

    Raises
    ------
    ValueError
        If the two images differ in shape.
    """
    current, values_c = compact_labels(np.asarray(current))
    area_c = _areas(current)
    n_current = int(np.count_nonzero(area_c[1:]))
    if original is None:
        return LabelChanges(added=n_current, removed=0, changed=0, unchanged=0)
    original, values_o = compact_labels(np.asarray(original))
    if current.shape != original.shape:
        raise ValueError(f"labels are {current.shape}, the original {original.shape}")
    area_o = _areas(original)
    n_original = int(np.count_nonzero(area_o[1:]))
    both = (current != 0) & (original != 0)
    base = int(area_o.size)
    key = current[both].astype(np.int64) * base + original[both].astype(np.int64)
    pairs, counts = np.unique(key, return_counts=True)
    cur, org = np.divmod(pairs, base)
    identical = (counts == area_c[cur]) & (counts == area_o[org])
    same = {int(values_c[c]): int(values_o[o]) for c, o in zip(cur[identical], org[identical])}
    paired_c, paired_o = set(cur[identical].tolist()), set(org[identical].tolist())
    changed = 0
    rest_c, rest_o, rest_n = cur[~identical], org[~identical], counts[~identical]
    for i in np.argsort(-rest_n, kind="stable"):
        c, o = int(rest_c[i]), int(rest_o[i])
        if c not in paired_c and o not in paired_o:
            paired_c.add(c)
            paired_o.add(o)
            changed += 1
    return LabelChanges(
        added=n_current - len(paired_c),
        removed=n_original - len(paired_o),
        changed=changed,
        unchanged=len(same),
        same=same,
    )
