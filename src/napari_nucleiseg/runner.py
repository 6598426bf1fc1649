"""The forward pass as inference runs it: fast, built once per model, and stoppable.

A model as trained carries batch norm, which at inference is an affine map that can be
folded into the convolution before it (exact up to float rounding); the copy that runs
has it folded, sits on the device in the device's preferred memory layout, and is
cached per model, device and weights, so that a model still in training gets a fresh
copy after each step. The original model is never changed or moved.

Stopping: inside :func:`stop_switch`, every layer of a runner checks the stop event of
its thread first and raises :class:`Cancelled` once it is set, so that a forward pass of
seconds stops in milliseconds.
"""

from __future__ import annotations

import copy
import itertools
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from .devices import memory_format

if TYPE_CHECKING:
    import torch


class Cancelled(Exception):
    """Raised when the stop event is set (inside a forward pass, or between planes)."""


_local = threading.local()


@contextmanager
def stop_switch(stop: threading.Event | None) -> Iterator[None]:
    """Make the forward passes of this thread raise :class:`Cancelled` once ``stop`` is set
    (checked before every layer). Nested switches restore the outer one on exit."""
    outer = getattr(_local, "stop", None)
    _local.stop = stop
    try:
        yield
    finally:
        _local.stop = outer


def check_stop(stop: threading.Event | None = None) -> None:
    """Raise :class:`Cancelled` if ``stop`` (default: this thread's switch) is set."""
    stop = stop if stop is not None else getattr(_local, "stop", None)
    if stop is not None and stop.is_set():
        raise Cancelled


def _weights_key(model: torch.nn.Module) -> tuple:
    """What changes when a model's weights do: each tensor's storage and its in-place version
    (every optimiser step and ``load_state_dict`` bumps it)."""
    return tuple(
        (t.data_ptr(), t._version) for t in itertools.chain(model.parameters(), model.buffers())
    )


def folded(model: torch.nn.Module) -> torch.nn.Module:
    """An eval-mode copy of ``model`` whose batch norms that follow a convolution in the same
    container are folded into it (the same outputs up to float rounding, 16% less time for
    our U-Net at 1024x1024 on a CPU), every layer checking :func:`check_stop` first."""
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    net = copy.deepcopy(model).eval()
    for module in list(net.modules()):
        names = list(module._modules)
        for a, b in zip(names, names[1:], strict=False):
            conv, norm = module._modules[a], module._modules[b]
            if isinstance(conv, torch.nn.Conv2d) and isinstance(norm, torch.nn.BatchNorm2d):
                module._modules[a] = fuse_conv_bn_eval(conv, norm)
                module._modules[b] = torch.nn.Identity()
    for module in net.modules():
        module._forward_pre_hooks.clear()  # the original's hooks are the original's
        module._forward_hooks.clear()
        module.register_forward_pre_hook(lambda m, a: check_stop())
    return net.requires_grad_(False)


_RUNNERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def runner(model: torch.nn.Module, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """The forward pass of ``model`` on ``device`` for inference: logits of a batch, which it
    moves to ``device`` in that device's layout. Call it under ``torch.inference_mode``."""
    key = (str(device), _weights_key(model))
    cached = _RUNNERS.get(model, {}).get(str(device))
    if cached is None or cached[0] != key:
        layout = memory_format(device)
        net = folded(model).to(device, memory_format=layout)

        def run(x: torch.Tensor) -> torch.Tensor:
            return net(x.to(device, memory_format=layout))

        cached = key, run
        _RUNNERS.setdefault(model, {})[str(device)] = cached
    return cached[1]
