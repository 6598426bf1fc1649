"""A stack whose planes are computed only when indexed: browse a whole data set cheaply."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np


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
