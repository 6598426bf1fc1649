"""Label images in the files other tools open: ImageJ/Fiji, QuPath, OME readers.

=========  ======================  ==================================================
format     file                    opens in
=========  ======================  ==================================================
tiff       ``<id>.tif``            any (compressed 16- or 32-bit labels)
roi        ``<id>.zip``            ImageJ/Fiji ROI Manager (``roifile``)
geojson    ``<id>.geojson``        QuPath (File > Import objects); pixel coordinates
ome-tiff   ``<id>.ome.tif``        Bio-Formats, QuPath, tifffile; pixel size kept
ome-zarr   ``<id>.ome.zarr/``      NGFF 0.4: napari-ome-zarr, Fiji (MoBIE), QuPath
=========  ======================  ==================================================

Outlines follow pixel edges (:mod:`.outlines`): an ImageJ ROI or a QuPath
object, filled, is the nucleus's mask to the pixel. Every file is written under
a temporary name and renamed when complete; an OME-Zarr folder likewise.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from ..errors import NucleisegError
from .atomic import (
    file_problem,
    partial_path,
    swap_into_place,
    write_atomically,
    write_text_atomically,
)
from .images import label_dtype, tiff_labels, write_label_tiff
from .outlines import Outline, label_outlines

FORMATS = ("tiff", "roi", "geojson", "ome-tiff", "ome-zarr")
SUFFIXES = {
    "tiff": ".tif",
    "roi": ".zip",
    "geojson": ".geojson",
    "ome-tiff": ".ome.tif",
    "ome-zarr": ".ome.zarr",
}
#: QuPath's class of every exported object, and its colour (QuPath's "Nucleus" default)
CLASSIFICATION = {"name": "Nucleus", "color": [0, 0, 200]}
_OME_ZARR_EXTRA = "pip install 'napari-nucleiseg[ome-zarr]'"


def parse_formats(text: str | Iterable[str]) -> tuple[str, ...]:
    """The formats of a comma-separated choice (``"tiff,roi"``), in the given order.

    Raises
    ------
    NucleisegError
        An unknown format, or ``ome-zarr`` without its optional extra installed.
    """
    names = text.split(",") if isinstance(text, str) else list(text)
    chosen = tuple(dict.fromkeys(n.strip().lower() for n in names if n.strip()))
    unknown = [n for n in chosen if n not in FORMATS]
    if unknown or not chosen:
        raise NucleisegError(
            f"unknown output format {', '.join(unknown) or '(none)'}; "
            f"choose from {', '.join(FORMATS)}"
        )
    if "ome-zarr" in chosen:
        try:
            import ome_zarr  # noqa: F401
        except ImportError:
            raise NucleisegError(f"the ome-zarr format needs: {_OME_ZARR_EXTRA}") from None
    return chosen


def output_paths(folder: str | os.PathLike, image_id: str, formats: Iterable[str]) -> dict:
    """{format: ``folder/<id><suffix>``}."""
    return {f: Path(folder) / f"{image_id}{SUFFIXES[f]}" for f in formats}


def write_outputs(
    paths: Mapping[str, Path],
    labels: np.ndarray,
    *,
    image: np.ndarray | None = None,
    pixel_size: tuple[float, float] | None = None,
    table: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Write ``labels`` in each format of ``paths`` (see :func:`output_paths`), replacing
    what is there; the caller has refused what must not be replaced."""
    outlines = None
    for fmt, path in paths.items():
        if fmt == "tiff":
            write_label_tiff(path, labels, overwrite=True)
        elif fmt in ("roi", "geojson"):
            outlines = outlines if outlines is not None else list(label_outlines(labels))
            if fmt == "roi":
                write_imagej_rois(path, outlines)
            else:
                write_geojson(path, outlines, table)
        elif fmt == "ome-tiff":
            write_ome_tiff(path, labels, pixel_size)
        elif fmt == "ome-zarr":
            write_ome_zarr(path, labels, image, pixel_size)
        else:
            raise ValueError(f"unknown format {fmt!r}")


def imagej_roi(label: int, outlines: list[Outline]):
    """One nucleus as an ImageJ ROI: a traced polygon, or, with holes or several parts, a
    composite (shape) ROI that ImageJ fills with the even-odd rule."""
    from roifile import ROI_TYPE, ImagejRoi

    rings = [r for o in outlines for r in (o.exterior, *o.holes)]
    if len(rings) == 1:
        points = rings[0][:-1].astype(np.int32)
        roi = ImagejRoi.frompoints(points, name=f"{label:04d}")
        roi.roitype = ROI_TYPE.TRACED  # what ImageJ's wand and Analyze Particles make
        roi.right, roi.bottom = (int(v) for v in points.max(axis=0))  # the outline's own box
        return roi
    path = []
    for ring in rings:  # MOVETO x y, LINETO x y ..., CLOSE
        path += [0, *ring[0]]
        for x, y in ring[1:-1]:
            path += [1, x, y]
        path.append(4)
    points = np.concatenate(rings)
    (left, top), (right, bottom) = points.min(axis=0), points.max(axis=0)
    return ImagejRoi(
        roitype=ROI_TYPE.RECT,
        version=228,
        name=f"{label:04d}",
        left=int(left),
        top=int(top),
        right=int(right),
        bottom=int(bottom),
        shape_roi_size=len(path),
        multi_coordinates=np.asarray(path, dtype=np.float32),
    )


def write_imagej_rois(path: str | os.PathLike, outlines: list[tuple[int, list[Outline]]]) -> Path:
    """An ImageJ ROI Manager zip: one ROI per nucleus, named by its zero-padded label."""
    from roifile import roiwrite

    rois = [imagej_roi(label, parts) for label, parts in outlines]

    def write(tmp: Path) -> None:
        if rois:
            roiwrite(tmp, rois, mode="w")
        else:  # an empty zip: a valid, empty ROI set
            import zipfile

            zipfile.ZipFile(tmp, "w").close()

    return write_atomically(path, write)


def _json_ring(ring: np.ndarray) -> list[list[int]]:
    return ring.astype(np.int64).tolist()


def _measurements(table: Mapping[str, np.ndarray] | None, row: int | None) -> dict:
    if table is None or row is None:
        return {}
    values = {name: float(np.asarray(col)[row]) for name, col in table.items() if name != "label"}
    return {k: v for k, v in values.items() if math.isfinite(v)}  # JSON has no NaN


def geojson_features(
    outlines: list[tuple[int, list[Outline]]], table: Mapping[str, np.ndarray] | None = None
) -> dict:
    """A GeoJSON FeatureCollection as QuPath imports it: a detection per nucleus, classified
    "Nucleus", with the table's row as its measurements; coordinates in pixels (x, y)."""
    rows = {}
    if table is not None:
        rows = {int(label): i for i, label in enumerate(np.asarray(table["label"]))}
    features = []
    for label, parts in outlines:
        polygons = [[_json_ring(o.exterior), *map(_json_ring, o.holes)] for o in parts]
        if len(polygons) == 1:
            geometry = {"type": "Polygon", "coordinates": polygons[0]}
        else:
            geometry = {"type": "MultiPolygon", "coordinates": polygons}
        properties = {
            "objectType": "detection",
            "name": f"Nucleus {label}",
            "classification": dict(CLASSIFICATION),
            "label": int(label),
            "measurements": _measurements(table, rows.get(int(label))),
        }
        features.append({"type": "Feature", "geometry": geometry, "properties": properties})
    return {"type": "FeatureCollection", "features": features}


def write_geojson(
    path: str | os.PathLike,
    outlines: list[tuple[int, list[Outline]]],
    table: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """QuPath GeoJSON of the nuclei (see :func:`geojson_features`)."""
    text = json.dumps(geojson_features(outlines, table), separators=(",", ":"))
    return write_text_atomically(path, text)


def write_ome_tiff(
    path: str | os.PathLike, labels: np.ndarray, pixel_size: tuple[float, float] | None = None
) -> Path:
    """An OME-TIFF of the labels, its OME-XML carrying the pixel size in µm."""
    import tifffile

    metadata: dict = {"axes": "YX", "Name": "nuclei"}
    if pixel_size is not None:
        metadata.update(
            PhysicalSizeY=pixel_size[0],
            PhysicalSizeYUnit="µm",
            PhysicalSizeX=pixel_size[1],
            PhysicalSizeXUnit="µm",
        )
    return write_atomically(
        path,
        lambda tmp: tifffile.imwrite(
            tmp,
            **tiff_labels(labels),
            ome=True,
            photometric="minisblack",
            compression="zlib",
            metadata=metadata,
        ),  # fmt: skip
    )


def _pyramid(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Downsampling factors while the smaller side stays at 256 px or more."""
    side = min(shape[:2])
    return tuple(f for f in (2, 4, 8, 16) if side // f >= 256)


def _in_memory_or_dask(array):
    """A numpy array as it is; labels or an image on disk (Zarr) as a Dask array, which
    ome-zarr writes a chunk at a time."""
    if isinstance(array, np.ndarray) or not hasattr(array, "chunks"):
        return np.asarray(array)
    import dask.array as da

    return array if isinstance(array, da.Array) else da.from_array(array, chunks=array.chunks)


def write_ome_zarr(
    path: str | os.PathLike,
    labels: np.ndarray,
    image: np.ndarray | None = None,
    pixel_size: tuple[float, float] | None = None,
) -> Path:
    """An OME-Zarr (NGFF 0.4, Zarr v2) image with the nuclei in ``labels/nuclei``.

    The image is the source image (grey as y, x; RGB as c, y, x) when given,
    else the labels themselves; both carry the pixel size in micrometres.
    """
    try:
        import zarr

        with warnings.catch_warnings():  # ome-zarr 0.14+ deprecates a default of its own
            warnings.simplefilter("ignore", DeprecationWarning)
            from ome_zarr.format import FormatV04
            from ome_zarr.scale import Methods
            from ome_zarr.writer import write_image, write_labels
    except ImportError:
        raise NucleisegError(f"the ome-zarr format needs its extra: {_OME_ZARR_EXTRA}") from None
    path = Path(path)
    labels, image = _in_memory_or_dask(labels), None if image is None else _in_memory_or_dask(image)
    labels = labels.astype(label_dtype(int(labels.max())))
    base = labels if image is None else image
    if base.ndim == 3:
        base = np.moveaxis(base[..., :3], -1, 0)
    axes = "cyx" if base.ndim == 3 else "yx"
    units = scale = None
    if pixel_size is not None:
        scale = {"y": pixel_size[0], "x": pixel_size[1]}
        units = {"y": "micrometer", "x": "micrometer"}
    factors = _pyramid(labels.shape)
    tmp = partial_path(path)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        # NGFF 0.4 on Zarr v2: what Fiji (MoBIE, n5-viewer), QuPath and napari-ome-zarr read
        root = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        write_image(
            base, root, scale_factors=factors, axes=axes, fmt=FormatV04(),
            method=Methods.NEAREST if image is None else Methods.RESIZE,  # labels stay labels
            scale=None if scale is None else ({"c": 1.0, **scale} if axes == "cyx" else scale),
            axes_units=None if units is None else units,
        )  # fmt: skip
        write_labels(
            labels, root, name="nuclei", scaler=None, scale_factors=factors, axes="yx",
            fmt=FormatV04(),
            label_metadata={"source": {"image": "../../"}},  # the image they outline
            scale=scale, axes_units=units,
        )  # fmt: skip
        old = path.with_name(f".{path.name}.{os.getpid()}.old")
        swap_into_place(tmp, path, old)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise file_problem(path, exc) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
