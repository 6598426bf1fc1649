"""A stack whose planes are computed only when indexed: browse a whole data set cheaply,
and the stacks of a stage-1 root (images of every size padded to the largest)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import FileProblem
from . import stage1
from .images import label_dtype


class LazyStack:
    """An (N, ...) array-like whose plane ``i`` is ``plane(i)``, computed on access.

    napari (and numpy code that indexes first) reads only the planes it shows;
    the last few planes are cached, so the image and its overlays cost one read.
    Indexing the first axis with an int gives one plane; a slice or a list
    stacks several.

    Parameters
    ----------
    n : int
        Number of planes.
    plane_shape : tuple of int
        Shape every ``plane(i)`` returns.
    dtype : numpy dtype
        dtype every ``plane(i)`` returns.
    plane : callable
        ``plane(i) -> ndarray`` of ``plane_shape`` and ``dtype``.
    cache : int
        How many recent planes to keep.
    """

    def __init__(
        self,
        n: int,
        plane_shape: tuple[int, ...],
        dtype: np.dtype | type,
        plane: Callable[[int], np.ndarray],
        cache: int = 4,
    ):
        self.shape = (int(n), *map(int, plane_shape))
        self.dtype = np.dtype(dtype)
        self._plane = lru_cache(maxsize=cache)(plane)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def _expand(self, key) -> tuple:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            i = next(i for i, k in enumerate(key) if k is Ellipsis)
            fill = (slice(None),) * (self.ndim - len(key) + 1)
            key = key[:i] + fill + key[i + 1 :]
        return key

    def __getitem__(self, key) -> np.ndarray:
        first, *rest = self._expand(key)
        rest = tuple(rest)
        if isinstance(first, (int, np.integer)):
            index = range(self.shape[0])[first]  # negative indices and bounds as numpy
            return self._plane(index)[rest]
        indices = (
            range(self.shape[0])[first] if isinstance(first, slice) else np.asarray(first).tolist()
        )
        planes = [self._plane(range(self.shape[0])[i])[rest] for i in indices]
        if not planes:
            return np.zeros((0, *np.empty(self.shape[1:], np.bool_)[rest].shape), self.dtype)
        return np.stack(planes)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        return f"LazyStack(shape={self.shape}, dtype={self.dtype})"


def _pad(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Zero-pad at the bottom and right up to ``shape`` (top-left stays aligned)."""
    out = np.zeros(shape, dtype=array.dtype)
    out[tuple(slice(0, n) for n in array.shape)] = array
    return out


def _image_plane(folder: Path, shape: tuple[int, ...]) -> np.ndarray:
    try:
        image = stage1.read_image(folder)
    except FileProblem as exc:
        warnings.warn(f"cannot show sample: {exc}", stacklevel=1)
        return np.zeros(shape, np.uint8)
    if image.ndim == 2 and len(shape) == 3:
        image = np.repeat(image[..., None], 3, axis=2)
    return _pad(image, shape)


def _label_plane(
    folder: Path, image_shape: tuple[int, int], shape: tuple[int, int], dtype
) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", stage1.OverlapWarning)
            labels, _, _ = stage1.read_labels(folder, image_shape)
    except FileProblem as exc:
        warnings.warn(f"cannot show masks: {exc}", stacklevel=1)
        labels = None
    if labels is None:
        return np.zeros(shape, dtype)
    return _pad(labels.astype(dtype, copy=False), shape)


def root_stacks(root: str | Path) -> tuple[list[stage1.SampleInfo], LazyStack, LazyStack | None]:
    """Lazy (N, H, W[, 3]) image and (N, H, W) label stacks of a root, from PNG headers only.

    Images are padded at the bottom and right to the largest size; the stack is
    RGB unless every image is stored grey. The labels stack is None when no
    sample has a ``masks/`` folder.
    """
    infos = stage1.scan(root)
    height = max(i.shape[0] for i in infos)
    width = max(i.shape[1] for i in infos)
    grey = all(i.mode in {"L", "1"} for i in infos)
    image_shape = (height, width) if grey else (height, width, 3)
    images = LazyStack(
        len(infos), image_shape, np.uint8, lambda k: _image_plane(infos[k].path, image_shape)
    )
    masks = [stage1.mask_paths(i.path) for i in infos]
    if all(m is None for m in masks):
        return infos, images, None
    dtype = label_dtype(max(len(m or ()) for m in masks))
    labels = LazyStack(
        len(infos),
        (height, width),
        dtype,
        lambda k: _label_plane(infos[k].path, infos[k].shape, (height, width), dtype),
    )
    return infos, images, labels


def display_plane(image: np.ndarray) -> np.ndarray:
    """An image as 8-bit for browsing: each channel stretched from its 0.5th to its 99.5th
    percentile, so that 8-, 16-bit and float images of one folder look alike; RGBA's alpha
    is dropped."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3:
        image = image[..., :3]
    axes = (0, 1)
    low = np.percentile(image, 0.5, axis=axes, keepdims=True)
    high = np.percentile(image, 99.5, axis=axes, keepdims=True)
    scaled = (image - low) / np.maximum(high - low, 1e-6)
    return (np.clip(scaled, 0, 1) * 255).round().astype(np.uint8)


def batch_stacks(
    images: list[Path], labels: list[Path], shapes: list[tuple[int, ...]] | None = None
) -> tuple[LazyStack, LazyStack]:
    """Lazy (N, H, W[, 3]) 8-bit display and (N, H, W) label stacks of a batch's images and
    their label images, from headers only (or the ``shapes`` already read from them),
    padded at the bottom and right to the largest.

    RGB when any image is; a file that cannot be read shows as zeros, with a warning.
    """
    from .images import image_shape, read_image_file, read_label_image

    shapes = shapes or [image_shape(p) for p in images]
    height = max(s[0] for s in shapes)
    width = max(s[1] for s in shapes)
    colour = any(len(s) == 3 for s in shapes)
    plane_shape = (height, width, 3) if colour else (height, width)

    def image_plane(k: int) -> np.ndarray:
        try:
            plane = display_plane(read_image_file(images[k]))
        except FileProblem as exc:
            warnings.warn(f"cannot show image: {exc}", stacklevel=1)
            return np.zeros(plane_shape, np.uint8)
        if colour and plane.ndim == 2:
            plane = np.repeat(plane[..., None], 3, axis=2)
        return _pad(plane, plane_shape)

    def label_plane(k: int) -> np.ndarray:
        try:
            plane = read_label_image(labels[k])
        except FileProblem as exc:
            warnings.warn(f"cannot show labels: {exc}", stacklevel=1)
            return np.zeros((height, width), np.uint32)
        return _pad(plane.astype(np.uint32, copy=False), (height, width))

    return (
        LazyStack(len(images), plane_shape, np.uint8, image_plane),
        LazyStack(len(labels), (height, width), np.uint32, label_plane),
    )
