"""Segmentation networks, their registry, and checkpoints that carry their config.

>>> model = create_model("unet", in_channels=1, out_channels=2, depth=4, base=32)
>>> model, config = load_model("path/to/checkpoint.pt", device="auto")
"""

from .checkpoint import (
    DEFAULT_MODEL,
    ModelConfig,
    TrainingInfo,
    load_model,
    read_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
    shipped_models,
)
from .linknet import LinkNet
from .registry import MODELS, SegmentationModel, available_models, create_model, register
from .unet import UNet

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "LinkNet",
    "ModelConfig",
    "SegmentationModel",
    "TrainingInfo",
    "UNet",
    "available_models",
    "create_model",
    "load_model",
    "read_checkpoint",
    "register",
    "resolve_checkpoint",
    "save_checkpoint",
    "shipped_models",
]
