"""The layer-metadata contract: the keys this plugin writes on layers, who writes and who reads.

One place, so that a key written by one dock is the key another reads (an export
once recorded ``"model": null`` because nothing wrote the key it read).

==============  =====================================  ==========================================
key             written by                             read by
==============  =====================================  ==========================================
SAMPLE_ID       reader (image, masks); Segment         Segment (reference, names of outputs),
                                                       Correct (sample id)
SOURCE          reader; Segment (the image's source)   Correct (original masks; manifest),
                                                       Segment (outputs never replace it)
MASK_NAMES      reader (masks of a sample folder)      Correct (unchanged nuclei keep their file)
STAGE1_IDS      reader (stacks of a root)              the canvas overlay of the sample id
OUTPUT          Segment (labels, probability maps)     Segment (never offered as input or truth)
MODEL           Segment (labels)                       Correct (manifest), Segment's status
POSTPROCESS     Segment (labels)                       Correct (manifest)
BASELINE        Correct (first sight, new data)        Correct (the change count, the export)
==============  =====================================  ==========================================
"""

from __future__ import annotations

from dataclasses import asdict

from ..postprocess import PostprocessConfig

SAMPLE_ID = "sample_id"  #: str: the stage-1 sample id
SOURCE = "source"  #: str: the sample folder, root or file the image came from
MASK_NAMES = "mask_names"  #: dict label -> mask file name in the sample's masks/
STAGE1_IDS = "stage1_ids"  #: list of str: the sample ids under a root's slider
OUTPUT = "nucleiseg_output"  #: True: a layer this plugin computed
MODEL = "model"  #: str: the model that made the labels (shipped name or checkpoint path)
POSTPROCESS = "postprocess"  #: dict: the thresholds the labels were made with
BASELINE = "baseline_labels"  #: array: the labels the change count starts from


def source_of(layer) -> str | None:
    """Where a layer's data came from: our reader's record, else the file napari opened."""
    recorded = layer.metadata.get(SOURCE)
    if recorded:
        return str(recorded)
    path = getattr(getattr(layer, "source", None), "path", None)
    return str(path) if path else None


def segmentation(image, model: str, postprocess: PostprocessConfig) -> dict:
    """The metadata of labels segmented from ``image`` by ``model`` with ``postprocess``.

    The image's sample id and source travel to the labels, so that an export of
    the corrected labels names the sample and the model in the root's manifest.
    """
    meta = {MODEL: str(model), POSTPROCESS: asdict(postprocess)}  # (OUTPUT: put_layer's)
    if image.metadata.get(SAMPLE_ID):
        meta[SAMPLE_ID] = image.metadata[SAMPLE_ID]
    source = source_of(image)
    if source:
        meta[SOURCE] = source
    return meta
