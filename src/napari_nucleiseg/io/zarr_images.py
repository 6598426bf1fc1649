"""OME-Zarr images (NGFF) as inputs: the full-resolution level as a lazy (H, W[, C]) array.

A whole slide converted with bioformats2raw, or written by ``nucleiseg predict
--format ome-zarr``, is read a chunk at a time; axes of length 1 (t, z) are
dropped and the channel axis goes last, as every image of this project has it.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import FileProblem

#: what a folder's name ends with to be taken for an OME-Zarr image
SUFFIXES = (".zarr",)


def is_ome_zarr(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding an NGFF image (``multiscales`` metadata)."""
    path = Path(path)
    if not (path.is_dir() and path.name.lower().endswith(SUFFIXES)):
        return False
    return _multiscales(path) is not None


def _multiscales(path: Path) -> dict | None:
    for name, key in ((".zattrs", None), ("zarr.json", "attributes")):
        try:
            attrs = json.loads((path / name).read_text())
        except (OSError, ValueError):
            continue
        attrs = attrs.get(key, {}) if key else attrs
        attrs = attrs.get("ome", attrs)  # NGFF 0.5 nests it under "ome"
        if attrs.get("multiscales"):
            return attrs["multiscales"][0]
    return None


def open_ome_zarr(path: str | Path):
    """The full-resolution level of an OME-Zarr image as a Dask array (H, W) or (H, W, C).

    Raises
    ------
    FileProblem
        Not an NGFF image, unreadable, or not one 2-D plane (a Z-stack, a time series).
    """
    import dask.array as da
    import zarr

    path = Path(path)
    found = _multiscales(path)
    if found is None:
        raise FileProblem(path, "is not an OME-Zarr image (no multiscales metadata)")
    try:
        level = zarr.open_array(str(path / found["datasets"][0]["path"]), mode="r")
        array = da.from_zarr(level)
    except Exception as exc:  # zarr raises many types on a broken store
        raise FileProblem(path, f"cannot be read as OME-Zarr ({exc})") from None
    axes = [a["name"] if isinstance(a, dict) else a for a in found.get("axes", [])]
    axes = axes or list("tczyx"[-array.ndim :])
    keep = [i for i, a in enumerate(axes) if a in ("y", "x") or array.shape[i] > 1]
    names = "".join(axes[i] for i in keep)
    array = array.reshape([array.shape[i] for i in keep])
    if names == "cyx":
        return da.moveaxis(array, 0, -1)
    if names != "yx":
        shape = tuple(array.shape)
        raise FileProblem(
            path, f"has axes {names} {shape}: expected one 2-D image (y, x, channels)"
        )
    return array


#: NGFF unit names of a micrometre, and the factor of the others to micrometres
_TO_MICROMETRES = {"micrometer": 1.0, "nanometer": 1e-3, "millimeter": 1e3}


def ome_zarr_pixel_size(path: str | Path) -> tuple[float, float] | None:
    """(y, x) pixel size in µm of the full-resolution level (its scale transformation and
    the axes' units), or None when it records none in a unit of length."""
    found = _multiscales(Path(path))
    if found is None:
        return None
    axes = found.get("axes", [])
    scale = next(
        (t["scale"] for t in found["datasets"][0].get("coordinateTransformations", [])
         if t.get("type") == "scale"),
        None,
    )  # fmt: skip
    if scale is None or len(scale) != len(axes):
        return None
    size = {}
    for axis, value in zip(axes, scale, strict=True):
        if isinstance(axis, dict) and axis.get("name") in ("y", "x"):
            factor = _TO_MICROMETRES.get(axis.get("unit", ""))
            if factor is None or not value > 0:
                return None
            size[axis["name"]] = float(value) * factor
    return (size["y"], size["x"]) if len(size) == 2 else None
