"""Model names -> builders, and the base class every registered model shares.

A registered model maps a ``(N, in_channels, H, W)`` float tensor to
``(N, out_channels, H, W)`` logits, one channel per target map (nucleus body,
touching border, ...). It pads any H, W to its ``divisor`` internally and crops
the output back, so callers never see a shape error; inference pads tiles to
the divisor itself so that this internal padding is a no-op there.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class SegmentationModel(nn.Module):
    """Base of the registered models: pads to ``divisor``, runs ``_forward``, crops back.

    Subclasses set ``in_channels``, ``out_channels`` and ``divisor`` and
    implement ``_forward`` for inputs whose H and W are multiples of ``divisor``.
    """

    in_channels: int
    out_channels: int
    divisor: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the target maps.

        Parameters
        ----------
        x : (N, in_channels, H, W) float tensor
            Normalised images; any H, W >= 1.

        Returns
        -------
        (N, out_channels, H, W) float tensor
        """
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"input has shape {tuple(x.shape)}; expected (N, {self.in_channels}, H, W)"
            )
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.divisor, (-w) % self.divisor
        if ph or pw:
            # reflect needs the pad to be smaller than the side; replicate covers tiny inputs
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        return self._forward(x)[..., :h, :w]

    def _forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


Builder = Callable[..., SegmentationModel]

#: name -> builder taking ``in_channels``, ``out_channels`` and the architecture's keyword arguments
MODELS: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    """Register a model builder under ``name`` (a decorator)."""

    def decorate(builder: Builder) -> Builder:
        if name in MODELS:
            raise ValueError(f"a model named {name!r} is already registered")
        MODELS[name] = builder
        return builder

    return decorate


def available_models() -> list[str]:
    """The registered architecture names, sorted."""
    return sorted(MODELS)


def default_arguments(name: str) -> dict:
    """A registered architecture's keyword arguments that have defaults, with those defaults."""
    params = inspect.signature(MODELS[name]).parameters
    return {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}


def create_model(name: str, **config) -> SegmentationModel:
    """Build a registered architecture with random weights.

    Parameters
    ----------
    name : str
        A registered name (see :func:`available_models`).
    **config
        The builder's keyword arguments (``in_channels``, ``out_channels``,
        widths, depth, ...).

    Raises
    ------
    ValueError
        If ``name`` is not registered (the message lists the valid names), or
        the builder rejects the arguments.
    """
    try:
        builder = MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; choose from {', '.join(available_models())}"
        ) from None
    try:
        inspect.signature(builder).bind(**config)
    except TypeError as exc:  # an unknown or missing keyword: say which model refused it
        raise ValueError(f"model {name!r} does not accept these arguments: {exc}") from None
    return builder(**config)
