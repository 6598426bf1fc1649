"""Which model segments an image: a fixed one, or with ``auto`` the shipped model for its kind.

``--model auto`` (the default of ``nucleiseg predict``) gives H&E-like images the model
trained on H&E when it is installed, and every other image the default model
(:func:`napari_nucleiseg.kinds.auto_model`). A :class:`ModelChoice` loads each model once,
on first use, and is what a batch and each Dask worker hold.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from ..kinds import auto_model
from .checkpoint import DEFAULT_MODEL, load_model, shipped_models

#: the model name that chooses per image
AUTO = "auto"


class ModelChoice:
    """The model for each image: ``source`` (a shipped name or a checkpoint), or :data:`AUTO`.

    Parameters
    ----------
    source : str or path-like
    device : str or torch.device
        Where the models are loaded.
    load : callable, optional
        ``load(name, device=...)`` -> (model, config): a cache that outlives the batch (the
        dock's, so that a folder run reuses what the dock loaded); default
        :func:`~napari_nucleiseg.models.load_model`, each model once per batch.
    """

    def __init__(self, source: str | os.PathLike, device="cpu", *, load: Callable = load_model):
        self.source = str(source)
        self.device = device
        self._load = load
        self._loaded = {}

    def load(self, name: str):
        """(model, config) of ``name``, loaded on first use."""
        if name not in self._loaded:
            self._loaded[name] = self._load(name, device=self.device)
        return self._loaded[name]

    @property
    def fixed(self):
        """(model, config) of the fixed model, or with ``auto`` of the default one: loading it
        checks a checkpoint before any image is read."""
        return self.load(DEFAULT_MODEL if self.source == AUTO else self.source)

    def for_image(self, image: np.ndarray):
        """(name, model, config) for ``image``."""
        name = self.source
        if name == AUTO:
            name = auto_model(image, shipped_models(), DEFAULT_MODEL)
        return (name, *self.load(name))
