"""npe2 sample data: small real stage-1 samples, opened as image + ground-truth labels."""

from __future__ import annotations

from ..io import read_sample
from ..samples import sample_folder
from .reader import LayerData, sample_layers


def fluorescence() -> list[LayerData]:
    """A 256x256 fluorescence image with 57 nuclei and their masks."""
    return sample_layers(read_sample(sample_folder("fluorescence")))


def histology() -> list[LayerData]:
    """A 256x320 H&E-stained image with 37 nuclei and their masks."""
    return sample_layers(read_sample(sample_folder("histology")))
