"""The pixel size a microscope wrote into its file, in µm.

Read from the header alone, through ``tifffile``: OME-TIFF (``PhysicalSizeX``
and ``PhysicalSizeY`` with their units), ImageJ TIFF (the ``unit`` of its
description and the resolution tags) and a TIFF whose resolution unit is the
centimetre. Inches are not trusted: 72 and 300 dpi are what image editors
write, not what a microscope measured.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import tifffile

from ..errors import FileProblem, NucleisegError
from .microscope import MICROSCOPE_SUFFIXES, microscope_pixel_size

#: µm per unit, for the units OME and ImageJ write
_MICRONS = {
    "µm": 1.0,
    "μm": 1.0,  # the Greek letter mu, which some writers use for the micro sign
    "um": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "micrometre": 1.0,
    "\\u00b5m": 1.0,  # ImageJ's escaped micro sign
    "nm": 1e-3,
    "nanometer": 1e-3,
    "mm": 1e3,
    "millimeter": 1e3,
    "cm": 1e4,
    "centimeter": 1e4,
    "m": 1e6,
    "meter": 1e6,
    "å": 1e-4,
    "angstrom": 1e-4,
}
PixelSize = tuple[float, float]


def _microns(value: float, unit: str | None) -> float | None:
    factor = _MICRONS.get((unit or "µm").strip().lower())
    if factor is None or not value > 0:
        return None
    return float(value) * factor


def _ome_pixel_size(xml: str) -> PixelSize | None:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    pixels = next((e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return None
    sizes = []
    for axis in ("Y", "X"):
        raw = pixels.get(f"PhysicalSize{axis}")
        try:
            size = _microns(float(raw), pixels.get(f"PhysicalSize{axis}Unit"))
        except (TypeError, ValueError):
            return None
        if size is None:
            return None
        sizes.append(size)
    return sizes[0], sizes[1]


def _per_unit(tag) -> float | None:
    if tag is None:
        return None
    num, den = tag.value
    return num / den if num and den else None


def _resolution_pixel_size(page, unit: str | None) -> PixelSize | None:
    """(y, x) from the resolution tags: pixels per ``unit``."""
    x, y = _per_unit(page.tags.get("XResolution")), _per_unit(page.tags.get("YResolution"))
    if not x:
        return None
    size_x, size_y = _microns(1 / x, unit), _microns(1 / (y or x), unit)
    return None if size_x is None or size_y is None else (size_y, size_x)


def tiff_pixel_size(path: str | os.PathLike) -> PixelSize | None:
    """(y, x) pixel size in µm stored in a TIFF's header, or None when it holds none.

    Raises
    ------
    FileProblem
        The file cannot be read as TIFF.
    """
    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tif:
            if tif.is_ome and tif.ome_metadata:
                found = _ome_pixel_size(tif.ome_metadata)
                if found:
                    return found
            page = tif.pages.first
            if tif.is_imagej and (tif.imagej_metadata or {}).get("unit"):
                return _resolution_pixel_size(page, tif.imagej_metadata["unit"])
            unit = page.tags.get("ResolutionUnit")
            if unit is not None and unit.value == tifffile.RESUNIT.CENTIMETER:
                return _resolution_pixel_size(page, "cm")
    except Exception as exc:  # tifffile raises many types on a corrupt file
        raise FileProblem(path, f"cannot be read as TIFF ({exc})") from None
    return None


def pixel_size_of(path: str | os.PathLike) -> PixelSize | None:
    """(y, x) pixel size in µm that an image file records, or None (PNG and JPEG record none
    a microscope set)."""
    suffix = Path(path).suffix.lower()
    if Path(path).is_dir():
        from .zarr_images import ome_zarr_pixel_size

        return ome_zarr_pixel_size(path)
    if suffix in (".tif", ".tiff"):
        return tiff_pixel_size(path)
    if suffix in MICROSCOPE_SUFFIXES:
        return microscope_pixel_size(path)
    return None


def pixel_size_for(path: Path, given: float | None) -> tuple[float, float] | None:
    """``given`` (µm per pixel) when set, else what the image file records, else None."""
    if given is not None:
        if not (given > 0 and math.isfinite(given)):
            raise NucleisegError(f"a pixel size must be positive and finite, got {given}")
        return given, given
    return pixel_size_of(path)
