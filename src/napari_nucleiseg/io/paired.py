"""The ``images/`` + ``masks/`` layout: one instance-label image per image, same file stem.

This is how StarDist and Cellpose users keep annotated data (and how MoNuSeg is
shipped): ``<root>/images/a.png`` is annotated by ``<root>/masks/a.tif`` (or
``a.png``, ``a.tiff``). Images are any file :func:`read_image_file` reads;
masks are label images (0 = background, one integer per nucleus). A sample of
this layout is named by its image file, and its id is the file's stem, so
that training, evaluation and the stage-1 layout share one :class:`Sample`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import FileProblem
from .images import IMAGE_SUFFIXES, LABEL_SUFFIXES, image_files, read_image_file, read_label_image
from .inputs import image_id
from .stage1 import Sample, read_sample, resolve_samples

IMAGES = "images"
MASKS = "masks"


def is_paired_root(path: str | Path) -> bool:
    """True for a folder holding ``images/`` with at least one image file and ``masks/``."""
    path = Path(path)
    return (path / MASKS).is_dir() and bool(_images(path))


def _images(root: Path) -> list[Path]:
    folder = root / IMAGES
    return image_files(folder, IMAGE_SUFFIXES) if folder.is_dir() else []


def mask_file(image: str | Path) -> Path | None:
    """The label image annotating ``<root>/images/<stem>.*``: ``<root>/masks/<stem>.*``."""
    image = Path(image)
    folder = image.parent.parent / MASKS
    for suffix in LABEL_SUFFIXES:
        candidate = folder / f"{image_id(image)}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def list_pairs(root: str | Path) -> list[Path]:
    """The image files of an ``images/`` + ``masks/`` root, sorted, each with its mask.

    Raises
    ------
    FileProblem
        No image in ``images/``, an image without a mask (the message names
        the mask it looked for), or two images of one stem.
    """
    root = Path(root)
    images = _images(root)
    if not images:
        raise FileProblem(root / IMAGES, "holds no image file")
    seen: dict[str, Path] = {}
    for image in images:
        if image_id(image) in seen:
            raise FileProblem(image, f"has the same stem as {seen[image_id(image)].name}")
        seen[image_id(image)] = image
        if mask_file(image) is None:
            raise FileProblem(
                root / MASKS / f"{image_id(image)}.tif",
                f"does not exist: every image of {root / IMAGES} needs a label image "
                f"of the same stem ({', '.join(LABEL_SUFFIXES)})",
            )
    return images


def read_pair(image: str | Path) -> Sample:
    """Read one image of the layout and its labels into a :class:`~.stage1.Sample`.

    Raises
    ------
    FileProblem
        Unreadable files, a mask missing or of another size than its image.
    """
    image = Path(image)
    mask = mask_file(image)
    if mask is None:
        raise FileProblem(image.parent.parent / MASKS / f"{image_id(image)}.tif", "does not exist")
    pixels = read_image_file(image)
    if pixels.ndim == 3 and pixels.shape[-1] == 4:
        pixels = pixels[..., :3]
    labels = read_label_image(mask)
    if labels.shape != pixels.shape[:2]:
        raise FileProblem(
            mask,
            f"is {labels.shape[0]}x{labels.shape[1]} but its image is "
            f"{pixels.shape[0]}x{pixels.shape[1]}",
        )
    return Sample(image_id(image), image, np.asarray(pixels), labels)


def sample_id(path: str | Path) -> str:
    """The id of a sample of either layout: an image file's stem, or a sample folder's name."""
    path = Path(path)
    return image_id(path) if path.is_file() else path.name


def resolve_annotated(path: str | Path) -> list[Path]:
    """The samples of either layout: an ``images/`` + ``masks/`` root gives its image files;
    a stage-1 root or sample folder gives its sample folders (:func:`read_annotated` reads
    either).

    Raises
    ------
    FileProblem
        A path that is neither layout, or a broken one.
    """
    return list_pairs(path) if is_paired_root(path) else resolve_samples(path)


def read_annotated(path: str | Path) -> Sample:
    """A sample of either layout: an image file of an ``images/`` + ``masks/`` root, or a
    stage-1 sample folder."""
    return read_pair(path) if Path(path).is_file() else read_sample(path)
