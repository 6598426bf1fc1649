"""LazyStack indexes like the numpy stack it stands for, and computes only what is asked."""

from __future__ import annotations

import numpy as np
import pytest

from napari_nucleiseg.io.lazy import LazyStack


@pytest.fixture
def stack_and_calls():
    calls = []
    full = np.arange(5 * 4 * 3, dtype=np.uint16).reshape(5, 4, 3)

    def plane(i):
        calls.append(i)
        return full[i].copy()

    return LazyStack(5, (4, 3), np.uint16, plane, cache=2), full, calls


@pytest.mark.parametrize(
    "key",
    [
        2,
        -1,
        (1, slice(1, 3)),
        (3, 2, 1),
        slice(1, 4),
        slice(None, None, 2),
        [0, 4],
        (slice(2, 3), Ellipsis),
        (Ellipsis, 1),
        (np.int64(4), slice(None), 0),
    ],
    ids=str,
)
def test_indexing_matches_numpy(stack_and_calls, key):
    stack, full, _ = stack_and_calls
    np.testing.assert_array_equal(stack[key], full[key])


def test_only_requested_planes_are_computed_and_cached(stack_and_calls):
    stack, full, calls = stack_and_calls
    assert stack.shape == (5, 4, 3) and stack.ndim == 3 and stack.dtype == np.uint16
    stack[3]
    stack[3, 1:]
    assert calls == [3]
    np.testing.assert_array_equal(np.asarray(stack), full)
    with pytest.raises(IndexError):
        stack[5]
