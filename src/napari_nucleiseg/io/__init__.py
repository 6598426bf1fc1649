"""Stage-1 folders, label images and Kaggle run-length encoding, without napari."""

from .images import read_label_image, read_mask, read_stage1_image
from .rle import (
    labels_to_rles,
    read_submission,
    rle_decode,
    rle_encode,
    rles_to_labels,
    write_submission,
)
from .stage1 import (
    Overlap,
    OverlapWarning,
    Problem,
    Sample,
    check,
    is_sample_folder,
    is_stage1_root,
    list_samples,
    read_sample,
    resolve_samples,
    scan,
)

__all__ = [
    "Overlap",
    "OverlapWarning",
    "Problem",
    "Sample",
    "check",
    "is_sample_folder",
    "is_stage1_root",
    "labels_to_rles",
    "list_samples",
    "read_label_image",
    "read_mask",
    "read_sample",
    "read_stage1_image",
    "read_submission",
    "resolve_samples",
    "rle_decode",
    "rle_encode",
    "rles_to_labels",
    "scan",
    "write_submission",
]
