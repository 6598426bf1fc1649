"""One row of measurements per nucleus, in µm where the pixel size is known.

scikit-image's :func:`~skimage.measure.regionprops_table` computes every
shape and intensity figure; this module names the columns with their unit
(``area_um2`` or ``area_px``, ``centroid_x_um`` ...), adds the integrated
intensity, and writes the table as CSV. A centroid is measured from the centre
of the top-left pixel, as napari places a layer with ``scale`` and no
``translate``.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping
from io import StringIO
from pathlib import Path

import numpy as np

from .io.atomic import write_text_atomically

#: the columns of every table, before the intensities: (name with ``{u}`` for the
#: length unit, regionprops property, power of the unit)
SHAPE_COLUMNS = (
    ("centroid_y_{u}", "centroid-0", 1),
    ("centroid_x_{u}", "centroid-1", 1),
    ("area_{u}2", "area", 2),
    ("perimeter_{u}", "perimeter", 1),
    ("equivalent_diameter_{u}", "equivalent_diameter_area", 1),
    ("major_axis_length_{u}", "axis_major_length", 1),
    ("minor_axis_length_{u}", "axis_minor_length", 1),
    ("eccentricity", "eccentricity", 0),
    ("solidity", "solidity", 0),
)
Table = dict[str, np.ndarray]


def pixel_spacing(pixel_size: float | tuple[float, float] | None) -> tuple[float, float] | None:
    """(y, x) pixel size in µm, or None.

    Refuses sizes that are not positive and finite, and pixels that are not square:
    the perimeter needs square pixels (resample such an image, or measure in pixels).
    """
    if pixel_size is None:
        return None
    pair = np.broadcast_to(np.asarray(pixel_size, dtype=float), (2,))
    if not np.all(np.isfinite(pair)) or np.any(pair <= 0):
        raise ValueError(f"a pixel size must be positive, got {pixel_size}")
    if not np.isclose(pair[0], pair[1], rtol=1e-6):
        raise ValueError(
            f"pixels of {pair[0]:g} x {pair[1]:g} µm are not square; perimeters need square "
            "pixels (resample the image, or measure in pixels)"
        )
    return float(pair[0]), float(pair[1])


def _channels(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The image as (H, W, C): grey gets one channel, and so does grey stored as RGB (as
    stage-1 PNGs are); RGBA keeps its alpha out."""
    image = np.asarray(image)
    if image.shape[:2] != shape:
        raise ValueError(f"the image is {image.shape[:2]} and the labels {shape}: not one scene")
    if image.ndim == 2:
        return image[..., None]
    image = image[..., :3] if image.shape[-1] == 4 else image
    if all(np.array_equal(image[..., 0], image[..., c]) for c in range(1, image.shape[-1])):
        return image[..., :1]
    return image


def measure(
    labels: np.ndarray,
    image: np.ndarray | None = None,
    pixel_size: float | tuple[float, float] | None = None,
) -> Table:
    """Shape and intensity of every nucleus of a label image.

    Parameters
    ----------
    labels : (H, W) ndarray of int
        0 is background; each other value one nucleus.
    image : (H, W) or (H, W, C) ndarray, optional
        The original image, in its own units (not normalised): per channel the
        mean, max and integrated (summed) intensity of each nucleus. One channel
        is named ``mean_intensity``, several ``mean_intensity_ch0`` ... (an RGBA
        image's alpha is left out; grey stored as RGB is one channel).
    pixel_size : float or (float, float), optional
        µm per pixel (y, x). Lengths are then in µm and areas in µm² (``_um``,
        ``_um2``), else in pixels (``_px``, ``_px2``).

    Returns
    -------
    dict of column name to 1-D array, one row per label, sorted by label
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 2-D integer image, got {labels.shape} {labels.dtype}")
    spacing = pixel_spacing(pixel_size)
    unit = "px" if spacing is None else "um"
    from skimage.measure import regionprops_table  # imported when used: a fast package import

    properties = ["label", *(prop.split("-")[0] for _, prop, _ in SHAPE_COLUMNS)]
    channels = None if image is None else _channels(image, labels.shape)
    if channels is not None:
        properties += ["intensity_mean", "intensity_max", "num_pixels"]
    raw = regionprops_table(
        labels,
        intensity_image=channels,
        properties=properties,
        spacing=spacing or (1.0, 1.0),
    )
    table: Table = {"label": raw["label"]}
    for name, prop, _ in SHAPE_COLUMNS:
        table[name.format(u=unit)] = raw[prop]
    if channels is not None:
        many = channels.shape[-1] > 1
        for c in range(channels.shape[-1]):
            suffix = f"_ch{c}" if many else ""
            mean = raw[f"intensity_mean-{c}"]  # regionprops numbers the channels of a 3-D image
            table[f"mean_intensity{suffix}"] = mean
            table[f"max_intensity{suffix}"] = raw[f"intensity_max-{c}"]
            table[f"integrated_intensity{suffix}"] = mean * raw["num_pixels"]
    return table


def unit_name(pixel_size: tuple[float, float] | None) -> str:
    """How a table's lengths are counted, for a status line: "px" or "µm (0.5 µm/px)"."""
    return "px" if pixel_size is None else f"µm ({pixel_size[1]:g} µm/px)"


def table_csv(tables: Iterable[tuple[str | None, Table]]) -> str:
    """CSV text of one or more tables; a name fills an ``image`` column first (the tables
    of a batch), None leaves it out.

    The header is every column of every table, in the order first seen: a batch of
    grey and colour images has ``mean_intensity`` and ``mean_intensity_ch0`` ...,
    each row empty where its image has no such column.
    """
    tables = list(tables)
    columns = list(dict.fromkeys(c for _, table in tables for c in table))
    named = any(name is not None for name, _ in tables)
    out = StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow((["image"] if named else []) + columns)
    for name, table in tables:
        n = len(np.asarray(table["label"])) if "label" in table else 0
        values = [np.asarray(table[c]).tolist() if c in table else [""] * n for c in columns]
        lead = [name] if named else []
        writer.writerows(lead + [_cell(v) for v in row] for row in zip(*values))
    return out.getvalue()


def _cell(value: object) -> object:
    return repr(value) if isinstance(value, float) else value  # every digit of a float


def write_table(
    path: str | os.PathLike, tables: Iterable[tuple[str | None, Table]] | Table
) -> Path:
    """Write measurement tables as one CSV, atomically (see :func:`table_csv`)."""
    if isinstance(tables, Mapping):
        tables = [(None, tables)]
    return write_text_atomically(path, table_csv(tables))


def features(table: Table, n_labels: int | None = None) -> dict[str, np.ndarray]:
    """The table as a napari Labels layer's ``features``: row ``i`` holds label ``i``
    (row 0 the background, absent labels NaN), so that napari's features table
    highlights the selected label's row."""
    labels = np.asarray(table["label"], dtype=np.int64)
    n = int(max(labels.max(initial=0), n_labels or 0)) + 1
    out = {"label": np.arange(n)}
    for name, column in table.items():
        if name != "label":
            full = np.full(n, np.nan)
            full[labels] = column
            out[name] = full
    return out
