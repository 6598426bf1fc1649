"""Training: stage-1 data as augmented crops, the joint augmentation, and the loop.

>>> samples = read_samples(find_samples(root, exclude_ids=read_ids(test_ids)))
>>> train_s, val_s = split_samples(samples, read_ids(val_ids))
>>> gen = train(ModelConfig("unet"), train_s, val_s, TrainConfig(epochs=20), checkpoint="best.pt")
>>> result = drain(gen)  # napari_nucleiseg.inference.drain
"""

from .augment import AugmentConfig, jitter_intensity, jitter_stain, random_crop, random_matrix, warp
from .dataset import CropDataset, find_samples, read_ids, read_samples, split_samples
from .loop import (
    TrainConfig,
    TrainProgress,
    TrainResult,
    bce_dice_loss,
    evaluate,
    gap_weighting,
    lr_factor,
    make_optimizer,
    train,
)

__all__ = [
    "AugmentConfig",
    "CropDataset",
    "TrainConfig",
    "TrainProgress",
    "TrainResult",
    "bce_dice_loss",
    "gap_weighting",
    "evaluate",
    "find_samples",
    "jitter_intensity",
    "jitter_stain",
    "lr_factor",
    "make_optimizer",
    "random_crop",
    "random_matrix",
    "read_ids",
    "read_samples",
    "split_samples",
    "train",
    "warp",
]
