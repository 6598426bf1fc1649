"""Image files in and label images out, with errors that name the file.

Stage-1 images are 8-bit PNGs (grey, RGB, or RGBA with an opaque alpha);
masks are single-channel binary PNGs; label images are 2-D integer TIFFs or PNGs
(:func:`read_label_image`), written as compressed TIFFs (:func:`write_label_tiff`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from ..errors import FileProblem
from .atomic import file_problem, write_atomically
from .microscope import (
    MICROSCOPE_SUFFIXES,
    microscope_shape,
    read_all_channels,
    read_microscope_file,
)
from .zarr_images import is_ome_zarr, open_ome_zarr

#: what PIL raises on a file it cannot decode, a decompression bomb (a header that asks
#: for more than twice ``Image.MAX_IMAGE_PIXELS``) included
_PIL_ERRORS = (
    UnidentifiedImageError,
    Image.DecompressionBombError,
    OSError,
    SyntaxError,
    ValueError,
)
LABEL_SUFFIXES = (".tif", ".tiff", ".png")
#: read here; microscope formats (``.czi``, ``.nd2``, ``.lif`` ...) through the bioio extra
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", *MICROSCOPE_SUFFIXES)
_SIXTEEN_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def image_files(folder: str | Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> list[Path]:
    """The files of ``folder`` whose suffix (any case) is one of ``suffixes``, sorted.

    Not recursive, and hidden files are left out: ``.DS_Store``, macOS's ``._x.png``
    and partial writes are not images.
    """
    return sorted(
        p
        for p in Path(folder).iterdir()
        if p.suffix.lower() in suffixes and not p.name.startswith(".") and p.is_file()
    )


def _open_png(path: Path) -> Image.Image:
    """Open and fully decode a PNG, mapping every failure to a FileProblem."""
    if not path.exists():
        raise FileProblem(path, "does not exist")
    if not path.is_file():
        raise FileProblem(path, "is not a file")
    try:
        im = Image.open(path)
        im.load()
    except _PIL_ERRORS as exc:
        raise FileProblem(path, f"cannot be decoded as an image ({exc})") from None
    if im.format != "PNG":
        raise FileProblem(path, f"is a {im.format} file, expected PNG")
    return im


def png_header(path: str | Path) -> tuple[str, tuple[int, int]]:
    """Mode and (height, width) of a PNG, read from its header without decoding pixels.

    Raises
    ------
    FileProblem
        If the file is missing or not a readable image.
    """
    path = Path(path)
    if not path.is_file():
        raise FileProblem(path, "does not exist")
    try:
        with Image.open(path) as im:
            return im.mode, (im.height, im.width)
    except _PIL_ERRORS as exc:
        raise FileProblem(path, f"cannot be decoded as an image ({exc})") from None


def read_stage1_image(path: str | Path) -> np.ndarray:
    """Read a stage-1 image PNG as stored: grey or RGB, 8-bit.

    An alpha channel that is 255 everywhere is dropped; a palette image is expanded.

    Returns
    -------
    (H, W) or (H, W, 3) ndarray of uint8

    Raises
    ------
    FileProblem
        Missing or corrupt file, 16-bit pixels, a non-opaque alpha channel, or an empty image.
    """
    path = Path(path)
    im = _open_png(path)
    if im.mode in _SIXTEEN_BIT_MODES:
        raise FileProblem(
            path, f"is a 16-bit or float image (PNG mode {im.mode}); stage-1 images are 8-bit"
        )
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode == "1":
        im = im.convert("L")
    elif im.mode not in {"L", "LA", "RGB", "RGBA"}:
        raise FileProblem(path, f"has unsupported PNG mode {im.mode}")
    array = np.asarray(im)
    if array.size == 0:
        raise FileProblem(path, "is an empty image (0 pixels)")
    if im.mode in {"LA", "RGBA"}:
        alpha = array[..., -1]
        if not np.all(alpha == 255):
            raise FileProblem(path, "has a transparent alpha channel; expected an opaque image")
        array = array[..., 0] if im.mode == "LA" else array[..., :3]
    return np.ascontiguousarray(array)


def read_mask(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read one nucleus mask: a single-channel PNG holding 0 and one other value.

    Parameters
    ----------
    path : path-like
        The mask PNG.
    shape : (int, int), optional
        The image's (height, width); a mask of another size is an error.

    Returns
    -------
    (H, W) ndarray of bool

    Raises
    ------
    FileProblem
        Missing or corrupt file, more than one channel, the wrong size, or more
        than one non-zero value.
    """
    path = Path(path)
    im = _open_png(path)
    if im.mode not in {"L", "1"}:
        raise FileProblem(
            path, f"is not a single-channel mask (PNG mode {im.mode}); expected 8-bit grey"
        )
    array = np.asarray(im)
    if shape is not None and array.shape != tuple(shape):
        raise FileProblem(
            path, f"mask is {array.shape[0]}x{array.shape[1]}, its image is {shape[0]}x{shape[1]}"
        )
    mask = array != 0
    on = array[mask]
    if on.size and np.any(on != on[0]):
        values = np.unique(array)
        shown = ", ".join(str(v) for v in values[:6]) + (", ..." if values.size > 6 else "")
        raise FileProblem(path, f"mask is not binary: values {shown}")
    return mask


def read_label_image(path: str | Path) -> np.ndarray:
    """Read a 2-D instance-label image (TIFF or PNG); 0 is background.

    Returns
    -------
    (H, W) ndarray of an unsigned integer type

    Raises
    ------
    FileProblem
        Missing or unreadable file, not 2-D, not integer, or negative labels.
    """
    path = Path(path)
    if path.is_dir():
        raise FileProblem(path, "is a folder; expected a label image file (TIFF or PNG)")
    if not path.is_file():
        raise FileProblem(path, "does not exist")
    if path.suffix.lower() in (".tif", ".tiff"):
        try:
            array = tifffile.imread(path)
        except Exception as exc:  # tifffile raises many types on a corrupt file
            raise FileProblem(path, f"cannot be read as TIFF ({exc})") from None
    else:
        array = np.asarray(_open_png(path))
    array = np.squeeze(array) if array.ndim > 2 else array
    if array.ndim != 2:
        raise FileProblem(path, f"label image has shape {array.shape}; expected a 2-D image")
    if not np.issubdtype(array.dtype, np.integer):
        raise FileProblem(path, f"label image has dtype {array.dtype}; expected integers")
    if array.size and array.min() < 0:
        raise FileProblem(path, "label image has negative labels")
    return array.astype(label_dtype(int(array.max(initial=0))), copy=False)


def label_dtype(n_labels: int) -> np.dtype:
    """uint16 for up to 65,535 labels, uint32 beyond."""
    return np.dtype(np.uint16) if n_labels <= np.iinfo(np.uint16).max else np.dtype(np.uint32)


#: tile side of TIFFs written from labels on disk (Zarr): one tile in memory at a time
TIFF_TILE = 1024


def tiff_labels(labels) -> dict:
    """What ``tifffile.imwrite`` takes to write instance labels, as uint16 (uint32 beyond
    65,535 labels): a numpy array itself; labels on disk (Zarr, Dask) tile by tile into a
    tiled BigTIFF, read twice (their largest label, then the tiles), never whole."""
    if isinstance(labels, np.ndarray):
        return {"data": labels.astype(label_dtype(int(labels.max(initial=0))), copy=False)}
    height, width = labels.shape
    t = TIFF_TILE
    corners = [(y, x) for y in range(0, height, t) for x in range(0, width, t)]
    top = max(int(np.asarray(labels[y : y + t, x : x + t]).max(initial=0)) for y, x in corners)
    dtype = label_dtype(top)

    def tiles():
        for y, x in corners:
            block = np.asarray(labels[y : y + t, x : x + t])
            tile = np.zeros((t, t), dtype)
            tile[: block.shape[0], : block.shape[1]] = block
            yield tile

    return {
        "data": tiles(),
        "shape": (height, width),
        "dtype": dtype,
        "tile": (t, t),
        "bigtiff": True,
    }


def write_label_tiff(path: str | Path, labels, *, overwrite: bool = False) -> Path:
    """Write an instance-label image as one compressed TIFF, atomically.

    Parameters
    ----------
    path : path-like
        The ``.tif`` file; its folder is created when missing.
    labels : (H, W) ndarray of int, or labels on disk (Zarr, Dask)
        Stored as uint16 (uint32 when a label exceeds 65,535); labels on disk are
        written a tile at a time (:func:`tiff_labels`).
    overwrite : bool
        Replace an existing file; refused by default.

    Returns
    -------
    Path

    Raises
    ------
    FileProblem
        The file exists (and ``overwrite`` is False) or cannot be written.
    ValueError
        The labels are not a 2-D integer image.
    """
    path = Path(path)
    if not hasattr(labels, "dtype"):
        labels = np.asarray(labels)
    if len(labels.shape) != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 2-D integer image, got {labels.shape} {labels.dtype}")
    if path.exists() and not overwrite:
        raise FileProblem(path, "already exists")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise file_problem(path.parent, exc, "created") from None
    return write_atomically(
        path, lambda tmp: tifffile.imwrite(tmp, **tiff_labels(labels), compression="zlib")
    )


def _image_file(path: str | Path) -> Path:
    path = Path(path)
    if is_ome_zarr(path):
        return path
    if not path.is_file():
        raise FileProblem(path, "does not exist")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise FileProblem(path, f"is not a supported image ({', '.join(IMAGE_SUFFIXES)})")
    return path


def _check_shape(path: Path, shape: tuple[int, ...]) -> None:
    if 0 in shape:
        raise FileProblem(path, "is an empty image (0 pixels)")
    if not (len(shape) == 2 or (len(shape) == 3 and shape[-1] in (3, 4))):
        raise FileProblem(path, f"has shape {shape}: expected one 2-D image, grey, RGB or RGBA")


def image_shape(path: str | Path) -> tuple[int, ...]:
    """The shape of an image file, from its header: a batch checks every input with it
    before the first image runs.

    Raises
    ------
    FileProblem
        What :func:`read_image_file` would refuse from the header alone.
    """
    path = _image_file(path)
    if path.is_dir():
        shape = tuple(open_ome_zarr(path).shape)
    elif path.suffix.lower() in MICROSCOPE_SUFFIXES:
        shape = microscope_shape(path)
    elif path.suffix.lower() in (".tif", ".tiff"):
        try:
            with tifffile.TiffFile(path) as tif:
                shape = tuple(tif.series[0].shape)
        except Exception as exc:  # tifffile raises many types on a corrupt file
            raise FileProblem(path, f"cannot be read as TIFF ({exc})") from None
    else:
        try:
            with Image.open(path) as im:
                bands = 3 + ("transparency" in im.info) if im.mode == "P" else len(im.getbands())
                shape = (im.height, im.width) + ((bands,) if bands > 1 else ())
        except _PIL_ERRORS as exc:
            raise FileProblem(path, f"cannot be decoded as an image ({exc})") from None
    _check_shape(path, shape)
    return shape


def read_image_file(path: str | Path) -> np.ndarray:
    """Read a 2-D microscope image of any common kind: PNG, TIFF or JPEG, and CZI, ND2,
    LIF ... through the bioio extra (the nuclear channel of a multi-channel file).

    Grey, RGB and RGBA are returned as stored, in their own dtype (uint8,
    uint16, float); the network's normalisation takes care of the rest.

    Returns
    -------
    (H, W), (H, W, 3) or (H, W, 4) ndarray

    Raises
    ------
    FileProblem
        Missing, unreadable or unsupported file, an empty image, a 3-D stack,
        or NaN or infinite pixels.
    """
    path = _image_file(path)
    if path.is_dir():
        array = np.asarray(open_ome_zarr(path))
    elif path.suffix.lower() in MICROSCOPE_SUFFIXES:
        array = read_microscope_file(path).data
    elif path.suffix.lower() in (".tif", ".tiff"):
        try:
            array = np.asarray(tifffile.imread(path))
        except Exception as exc:  # tifffile raises many types on a corrupt file
            raise FileProblem(path, f"cannot be read as TIFF ({exc})") from None
    else:
        try:
            with Image.open(path) as im:
                im.load()
                if im.mode == "P":
                    im = im.convert("RGBA" if "transparency" in im.info else "RGB")
                array = np.asarray(im)
        except _PIL_ERRORS as exc:
            raise FileProblem(path, f"cannot be decoded as an image ({exc})") from None
    _check_shape(path, array.shape)
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        raise FileProblem(path, "has NaN or infinite pixel values")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    return array


#: a TIFF whose compressed blocks (strips or tiles) hold more pixels than this is refused
#: for bounded memory: every region read would decode a whole block
MAX_BLOCK_PIXELS = 64 * 1024 * 1024


def open_lazily(path: str | Path):
    """An image file as an array read only where it is indexed, and the function that
    closes it: a TIFF through tifffile's Zarr store (a tiled TIFF reads a tile at a time,
    a striped one a strip at a time) or, stored uncompressed in one piece, mapped into
    memory; an OME-Zarr image as a Dask array; any other file (PNG, JPEG, microscope
    files) read whole (:func:`read_image_file`) with nothing to close.

    Raises
    ------
    FileProblem
        As :func:`image_shape`; or a TIFF compressed in blocks over ``MAX_BLOCK_PIXELS``.
    """
    path = _image_file(path)
    shape = image_shape(path)
    if path.is_dir():  # OME-Zarr: a chunk at a time
        return open_ome_zarr(path), lambda: None
    if path.suffix.lower() not in (".tif", ".tiff"):
        return read_image_file(path), lambda: None
    import zarr

    try:  # uncompressed in one piece (ImageJ's, tifffile's default): pages read where touched
        mapped = tifffile.memmap(path, mode="r")
    except Exception:  # compressed, tiled or striped: not one piece
        mapped = None
    if mapped is not None and tuple(mapped.shape) == shape:
        return mapped, lambda: None
    store = None
    try:
        store = tifffile.imread(path, aszarr=True, series=0, level=0)
        array = zarr.open(store, mode="r")
    except Exception as exc:  # tifffile raises many types on a corrupt file
        if store is not None:
            store.close()
        raise FileProblem(path, f"cannot be read as TIFF ({exc})") from None
    problem = None
    if tuple(array.shape) != shape:
        problem = f"has shape {tuple(array.shape)}: expected one 2-D image"
    elif array.chunks[0] * array.chunks[1] > MAX_BLOCK_PIXELS:
        problem = (
            f"is compressed in blocks of {array.chunks[0]}x{array.chunks[1]} pixels, each read "
            "whole: save it as a tiled TIFF (tifffile, bfconvert, QuPath) to segment it in "
            "bounded memory"
        )
    if problem:
        store.close()
        raise FileProblem(path, problem)
    return array, store.close


#: channel axes of a TIFF series (tifffile's names): C channel, S sample, Q unknown
_CHANNEL_AXES = "CSQ"


def read_intensity_image(path: str | os.PathLike) -> np.ndarray:
    """The image whose intensities are measured per nucleus: every channel, as (H, W, C).

    A multi-channel TIFF (ImageJ or OME ``CYX``, ``YXS`` ...) and a microscope file give
    all their channels, where segmenting reads one plane (:func:`read_image_file`);
    other files are read as :func:`read_image_file` reads them.

    Raises
    ------
    FileProblem
        As :func:`read_image_file`, or a TIFF of more than one plane per channel.
    """
    path = _image_file(path)
    suffix = path.suffix.lower()
    if suffix in MICROSCOPE_SUFFIXES:
        return read_all_channels(path)
    if suffix not in (".tif", ".tiff"):
        return read_image_file(path)
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes, array = series.axes, np.asarray(series.asarray())
    except Exception as exc:  # tifffile raises many types on a corrupt file
        raise FileProblem(path, f"cannot be read as TIFF ({exc})") from None
    keep = [i for i, a in enumerate(axes) if a in "YX" or a in _CHANNEL_AXES or array.shape[i] > 1]
    array = array.reshape([array.shape[i] for i in keep])  # axes of length 1 dropped
    axes = "".join(axes[i] for i in keep)
    if sorted(axes) != sorted("YX") and (len(axes) != 3 or axes.strip("YX") not in _CHANNEL_AXES):
        raise FileProblem(path, f"has axes {axes} {array.shape}: expected one 2-D image")
    if len(axes) == 3:
        array = np.moveaxis(array, axes.index(axes.strip("YX")), -1)
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        raise FileProblem(path, "has NaN or infinite pixel values")
    return array
