"""Microscope files (CZI, ND2, LIF ...) through ``bioio``, an optional extra.

``bioio`` and its readers are imported only when such a file is opened, so
``import napari_nucleiseg`` stays fast and the core needs none of them. Without
them, opening such a file fails with one line naming what to install.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import FileProblem

#: suffix -> the bioio reader package that opens it
READERS = {
    ".czi": "bioio-czi",
    ".nd2": "bioio-nd2",
    ".lif": "bioio-lif",
    ".dv": "bioio-dv",
    ".ims": "bioio-imaris",
    ".vsi": "bioio-bioformats",
    ".oib": "bioio-bioformats",
    ".oif": "bioio-bioformats",
}
MICROSCOPE_SUFFIXES = tuple(READERS)
EXTRA = "pip install 'napari-nucleiseg[bioio]'"
#: channel names that mark the nuclear stain, matched case-insensitively as a substring
NUCLEAR_STAINS = ("dapi", "hoechst", "draq5", "draq7", "sytox", "to-pro", "topro", "nucle", "h2b")


@dataclass(frozen=True)
class MicroscopeImage:
    """One 2-D plane of a microscope file and what it records."""

    data: np.ndarray
    pixel_size: tuple[float, float] | None
    channel: str | None


def _open(path: Path):
    try:
        from bioio import BioImage
        from bioio_base.exceptions import UnsupportedFileFormatError
    except ImportError:
        raise FileProblem(path, f"{path.suffix} files are read through bioio: {EXTRA}") from None
    if not path.is_file():
        raise FileProblem(path, "does not exist")
    try:
        return BioImage(path)
    except UnsupportedFileFormatError:  # no reader installed, or every installed one refused it
        if path.suffix.lower() in _installed_suffixes():
            raise FileProblem(
                path, f"cannot be read by the installed bioio reader (a corrupt {path.suffix}?)"
            ) from None
        reader = READERS.get(path.suffix.lower(), "a bioio reader for it")
        raise FileProblem(
            path, f"no bioio reader for {path.suffix} is installed: pip install {reader}"
        ) from None
    except Exception as exc:  # readers raise many types on a corrupt file
        raise FileProblem(path, f"cannot be read ({exc})") from None


def _installed_suffixes() -> set[str]:
    """The suffixes the installed bioio readers declare."""
    try:
        from bioio.plugins import get_plugins

        return {suffix.lower() for suffix in get_plugins(use_cache=False)}
    except Exception:  # an older or newer bioio without this registry: say "missing"
        return set()


def nuclear_channel(names: list[str]) -> int | None:
    """The index of the channel named after a nuclear stain, or None."""
    for i, name in enumerate(names):
        if any(stain in str(name).lower() for stain in NUCLEAR_STAINS):
            return i
    return None


def _plane(path: Path, channel: int | str | None):
    """The opened file and the index of the channel to read, after the checks."""
    image = _open(path)
    scenes = len(getattr(image, "scenes", ()) or ())
    if scenes > 1:
        raise FileProblem(path, f"holds {scenes} scenes; expected one image (export each scene)")
    dims = image.dims
    if getattr(dims, "M", 1) > 1:
        raise FileProblem(path, f"is a mosaic of {dims.M} tiles; expected one stitched image")
    for axis in ("T", "Z"):
        n = getattr(dims, axis, 1)
        if n > 1:
            what = "a time series" if axis == "T" else "a Z-stack"
            raise FileProblem(path, f"is {what} of {n} planes; expected one 2-D image")
    names = [str(n) for n in image.channel_names]
    if isinstance(channel, str):
        if channel not in names:
            raise FileProblem(path, f"has no channel {channel!r} (channels: {', '.join(names)})")
        channel = names.index(channel)
    if isinstance(channel, int) and not 0 <= channel < max(len(names), 1):
        raise FileProblem(path, f"has no channel {channel} (channels: {', '.join(names)})")
    if channel is None:
        channel = 0 if len(names) <= 1 else nuclear_channel(names)
    if channel is None:
        raise FileProblem(
            path, f"has {len(names)} channels ({', '.join(names)}) and none is named as a nuclear "
            "stain (DAPI, Hoechst, DRAQ5 ...)"
        )  # fmt: skip
    return image, channel, names


def microscope_shape(path: str | os.PathLike) -> tuple[int, ...]:
    """The shape of the plane :func:`read_microscope_file` reads, from the file's header."""
    image, _, _ = _plane(Path(path), None)
    dims = image.dims
    samples = getattr(dims, "S", 1)
    return (dims.Y, dims.X) + ((samples,) if samples > 1 else ())


def read_microscope_file(
    path: str | os.PathLike, channel: int | str | None = None
) -> MicroscopeImage:
    """The 2-D plane of a microscope file to segment, with its pixel size in µm.

    Parameters
    ----------
    channel : int or str, optional
        A channel's index or name; by default the only channel, else the one named
        after a nuclear stain (DAPI, Hoechst, DRAQ5 ...), else an error listing them.

    Raises
    ------
    FileProblem
        bioio or its reader missing (naming what to install), a corrupt file, a
        time series or Z-stack, or several channels of which none is named as a
        nuclear stain.
    """
    path = Path(path)
    image, channel, names = _plane(path, channel)
    order = "YXS" if getattr(image.dims, "S", 1) > 1 else "YX"
    data = np.asarray(image.get_image_data(order, T=0, Z=0, C=channel))
    return MicroscopeImage(data, microscope_pixel_size(image), names[channel] if names else None)


def read_all_channels(path: str | os.PathLike) -> np.ndarray:
    """Every channel of a microscope file's plane as (H, W, C): what is measured per nucleus."""
    path = Path(path)
    image, _, _ = _plane(path, 0)
    if getattr(image.dims, "S", 1) > 1:
        return np.asarray(image.get_image_data("YXS", T=0, Z=0, C=0))
    return np.asarray(image.get_image_data("YXC", T=0, Z=0))


def microscope_pixel_size(image) -> tuple[float, float] | None:
    """(y, x) µm per pixel of an opened file (a path is opened), or None."""
    if isinstance(image, (str, os.PathLike)):
        image = _open(Path(image))
    sizes = image.physical_pixel_sizes
    return (float(sizes.Y), float(sizes.X)) if sizes.Y and sizes.X else None
