"""Kinds of image: which model suits an image, and validation that measures generalisation.

The kind of an image is what a microscope and a stain make of it: its size
(DSB2018 stage 1 has 9, one per source), whether it is colour, and whether its
background is bright (brightfield, H&E) or dark (fluorescence). A model is
judged on kinds it never saw (train without a kind, score on it), and
``--model auto`` gives H&E-like images (colour, bright background) the model
trained on H&E (:data:`HE_MODEL`) when it is installed.
"""

from __future__ import annotations

import numpy as np

from .preprocess import polarity, should_invert


def is_colour(image: np.ndarray) -> bool:
    """Whether an (H, W, C) image has colour: its first three channels are not all equal."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] < 3:
        return False
    r, g, b = (image[..., i] for i in range(3))
    return not (np.array_equal(r, g) and np.array_equal(g, b))


def image_kind(image: np.ndarray) -> str:
    """``"<H>x<W>-<grey|colour>-<dark|bright>"``: size, colour and background of an image."""
    image = np.asarray(image)
    colour = "colour" if is_colour(image) else "grey"
    background = "bright" if should_invert(image) else "dark"
    return f"{image.shape[0]}x{image.shape[1]}-{colour}-{background}"


#: the model ``--model auto`` uses for colour images with a bright background (H&E), if shipped
HE_MODEL = "monuseg-he-unet"


def is_he_like(image: np.ndarray) -> bool:
    """Colour with a bright background, white light: H&E and other stained brightfield
    (the polarity rule's statistics, :func:`napari_nucleiseg.preprocess.polarity`). A
    fluorescence composite (colour on black) is not."""
    seen = polarity(image)
    return seen.colour and seen.inverts


def auto_model(image: np.ndarray, installed, default: str) -> str:
    """The shipped model for ``image``: :data:`HE_MODEL` for H&E-like images when it is among
    ``installed`` (names), else ``default``."""
    return HE_MODEL if HE_MODEL in installed and is_he_like(image) else default
