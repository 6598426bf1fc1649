"""Nucleus outlines that run along pixel edges, as ImageJ and QuPath draw a mask.

The convention, held to the pixel: coordinates are (x, y) with pixel ``(row,
col)`` covering the square ``[col, col + 1] x [row, row + 1]`` (ImageJ's and
QuPath's pixel grid), and an outline follows the edges between a nucleus's
pixels and the others. A pixel is inside an outline exactly when its centre is,
so filling the polygon (ImageJ, QuPath, ``shapely``) gives back the mask, not a
mask one pixel smaller as contours through pixel centres do.

How: marching squares (``skimage.measure.find_contours``) on the mask
upsampled 2x puts every vertex on a pixel edge, a quarter pixel from a corner;
rounding moves it onto that corner. Parts that touch only at a corner are
outlined apart, as separate polygons; holes are interior rings.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi


@dataclass(frozen=True)
class Outline:
    """One connected part of a nucleus: its exterior and the rings of its holes.

    Each ring is an (N, 2) float array of (x, y) pixel-corner coordinates, closed
    (the last vertex repeats the first), counter-clockwise on screen for the
    exterior, clockwise for holes (y points down).
    """

    exterior: np.ndarray
    holes: tuple[np.ndarray, ...] = ()


def _ring(mask: np.ndarray, offset: tuple[int, int]) -> np.ndarray:
    """The closed pixel-edge ring around a 4-connected mask without holes, in (x, y)."""
    from skimage.measure import find_contours

    big = np.kron(np.pad(mask, 1).astype(np.uint8), np.ones((2, 2), np.uint8))
    (contour,) = find_contours(big, 0.5)  # (row, col) in the upsampled grid; closed
    # upsampled index u lies at (u + 0.5) / 2 in pixel-corner units of the padded mask
    corners = np.rint((contour[:-1] + 0.5) / 2) - 1 + np.asarray(offset)
    moved = np.any(corners != np.roll(corners, 1, axis=0), axis=1)
    corners = _drop_collinear(corners[moved])
    return np.concatenate([corners, corners[:1]])[:, ::-1].astype(float)  # (x, y), closed


def _drop_collinear(points: np.ndarray) -> np.ndarray:
    """The corners of a closed path of axis-parallel steps (its first point not repeated)."""
    before = points - np.roll(points, 1, axis=0)
    after = np.roll(points, -1, axis=0) - points
    turn = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
    return points[turn != 0]


def _signed_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]))


def _oriented(ring: np.ndarray, counter_clockwise: bool) -> np.ndarray:
    # y points down, so a ring counter-clockwise on screen has a negative area in (x, y)
    return ring if (_signed_area(ring) < 0) == counter_clockwise else ring[::-1]


def nucleus_outlines(mask: np.ndarray, offset: tuple[int, int] = (0, 0)) -> list[Outline]:
    """The outline of every 4-connected part of one nucleus's mask, largest first.

    Parameters
    ----------
    mask : (H, W) ndarray of bool
    offset : (row, col)
        Where ``mask[0, 0]`` lies in the image (a bounding box's corner).
    """
    parts, n = ndi.label(mask)
    outlines = []
    for part in range(1, n + 1):
        own = parts == part
        filled = ndi.binary_fill_holes(own)
        holes, n_holes = ndi.label(filled & ~own)
        inner = tuple(
            _oriented(_ring(ndi.binary_fill_holes(holes == h), offset), counter_clockwise=False)
            for h in range(1, n_holes + 1)
        )
        outlines.append(Outline(_oriented(_ring(filled, offset), counter_clockwise=True), inner))
    return sorted(outlines, key=lambda o: -abs(_signed_area(o.exterior)))


def label_outlines(labels: np.ndarray) -> Iterator[tuple[int, list[Outline]]]:
    """(label, outlines) for every nucleus of a label image, by increasing label."""
    from skimage.measure import regionprops

    for region in regionprops(np.asarray(labels)):
        top, left = region.bbox[:2]
        yield region.label, nucleus_outlines(region.image, (top, left))
