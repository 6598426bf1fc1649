"""Training data: stage-1 samples from one or more roots, served as augmented crops with targets.

Each item is drawn fresh: stain jitter on the raw image, the shared
normalisation (:func:`napari_nucleiseg.preprocess.normalize`, on the whole
image, as at inference), one joint random warp of image and labels, image-only
intensity jitter, then the target maps computed from the warped labels (so a
touching border stays ``border_width`` pixels wide at every zoom). The random
numbers of item ``i`` in epoch ``e`` come from ``(seed, e, i)`` alone, so a
run is reproducible whatever the order or number of loader workers.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import FileProblem
from ..io import Sample
from ..io.paired import read_annotated, resolve_annotated, sample_id
from ..postprocess import targets_from_labels
from ..preprocess import NormalizeConfig, normalize, should_invert
from ..scale import median_diameter
from .augment import AugmentConfig, jitter_stain, random_crop


def read_ids(path: str | os.PathLike) -> list[str]:
    """Ids listed one per line in a text file (blank lines and ``#`` comments skipped).

    Raises
    ------
    FileProblem
        The file is missing or unreadable.
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise FileProblem(path, f"cannot be read ({exc.strerror or exc})") from None
    return [s for s in (line.split("#")[0].strip() for line in lines) if s]


def find_samples(
    roots: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    exclude_ids: Collection[str] = (),
) -> list[Path]:
    """Samples of one or more roots, minus excluded ids: stage-1 sample folders, or the image
    files of an ``images/`` + ``masks/`` root (:mod:`napari_nucleiseg.io.paired`).

    An id found under several roots is taken from the first root that has it.

    Raises
    ------
    FileProblem
        A root that holds no sample of either layout.
    """
    if isinstance(roots, (str, os.PathLike)):
        roots = [roots]
    seen: dict[str, Path] = {}
    for root in roots:
        for path in resolve_annotated(root):
            if sample_id(path) not in exclude_ids:
                seen.setdefault(sample_id(path), path)
    return list(seen.values())


def read_samples(folders: Sequence[str | os.PathLike], workers: int = 4) -> list[Sample]:
    """Read annotated samples (image and labels), in the order given, with a few threads.

    Raises
    ------
    FileProblem
        A sample that cannot be read, or one without masks (training needs them).
    """
    with ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
        samples = list(pool.map(read_annotated, folders))
    for sample in samples:
        if sample.labels is None:
            raise FileProblem(sample.path, "has no masks/ folder; training needs annotated samples")
    return samples


def split_samples(
    samples: Sequence[Sample], val_ids: Collection[str]
) -> tuple[list[Sample], list[Sample]]:
    """(train, validation) by id: samples whose id is in ``val_ids`` validate."""
    val_ids = set(val_ids)
    return [s for s in samples if s.id not in val_ids], [s for s in samples if s.id in val_ids]


#: pixels of a sample per crop when crops follow the area (:class:`CropDataset` ``by_area``)
AREA_PER_CROP = 512 * 512


@dataclass(frozen=True, eq=False)  # samples hold arrays: a pool is itself only
class Pool:
    """Samples that share ``crops`` crops a repeat of a :class:`CropDataset`: the crops take
    the samples in turn, epoch after epoch, so that a few crops a repeat still visit every
    sample (a fine-tune's replay of every kind its base knew, whatever the share)."""

    samples: tuple[Sample, ...]
    crops: int

    def __post_init__(self) -> None:
        if not self.samples or self.crops < 1:
            raise ValueError(f"a pool needs samples and crops >= 1, got {len(self.samples)}, "
                             f"{self.crops}")  # fmt: skip


def crops_of(
    sample: Sample | Pool,
    normalization: NormalizeConfig,
    inverted_repeats: int = 1,
    by_area: bool = False,
) -> int:
    """Crops of ``sample`` (or a :class:`Pool`'s) in one repeat of a :class:`CropDataset` (see
    its parameters)."""
    if isinstance(sample, Pool):
        return sample.crops
    inverted = inverted_repeats > 1 and should_invert(sample.image, normalization)
    area = max(1, round(sample.labels.size / AREA_PER_CROP)) if by_area else 1
    return (inverted_repeats if inverted else 1) * area


class CropDataset(torch.utils.data.Dataset):
    """Augmented random crops of annotated samples and their target maps.

    Parameters
    ----------
    samples : sequence of Sample or Pool
        Annotated samples (``labels`` not None); a :class:`Pool` gives its crops from its
        samples in turn (:meth:`source`).
    maps : sequence of str
        Target maps, e.g. ("body", "border"); see ``targets_from_labels``.
    normalization : NormalizeConfig
        The model's normalisation.
    augment : AugmentConfig
        Random transforms; ``AugmentConfig.none()`` for plain crops.
    crop_size : int
        Side of the square crops (smaller images are mirrored to fill it).
    repeats : int
        Crops per sample per epoch.
    inverted_repeats : int
        Times more crops of every bright-background (brightfield, H&E) sample,
        which are a fifth of DSB2018 stage 1 and the kind the models get most wrong.
    border_width : int
        Radius of the touching-border target.
    by_area : bool
        Crops of a sample in proportion to its area (one per :data:`AREA_PER_CROP`
        pixels, at least one): a 1000x1000 tile gives 4 crops where a 256x256 image gives 1.
    diameter : float, optional
        Resize every sample so that its median nucleus is this many pixels wide
        (before the random zoom); None: samples as they are.
    seed : int
        Base of every item's random numbers.
    """

    def __init__(
        self,
        samples: Sequence[Sample | Pool],
        *,
        maps: Sequence[str] = ("body", "border"),
        normalization: NormalizeConfig | None = None,
        augment: AugmentConfig | None = None,
        crop_size: int = 256,
        repeats: int = 1,
        inverted_repeats: int = 1,
        border_width: int = 2,
        by_area: bool = False,
        diameter: float | None = None,
        seed: int = 0,
    ):
        samples = list(samples)
        if not samples:
            raise ValueError("no training samples")
        #: every sample, a pool's included
        self.samples = [m for s in samples for m in (s.samples if isinstance(s, Pool) else [s])]
        missing = [s.id for s in self.samples if s.labels is None]
        if missing:
            raise ValueError(f"samples without labels cannot train: {', '.join(missing[:3])}")
        if crop_size < 8 or repeats < 1 or inverted_repeats < 1:
            raise ValueError(
                "need crop_size >= 8, repeats >= 1 and inverted_repeats >= 1, "
                f"got {crop_size}, {repeats}, {inverted_repeats}"
            )
        self.maps = tuple(maps)
        self.normalization = normalization or NormalizeConfig()
        self.augment = augment or AugmentConfig()
        self.crop_size, self.repeats, self.border_width = crop_size, repeats, border_width
        self.seed, self.epoch = seed, 0
        #: source pixels per crop pixel of each sample (its nuclei at ``diameter``)
        self.scales = [
            1.0 if diameter is None else (median_diameter(s.labels) or diameter) / diameter
            for s in self.samples
        ]
        #: every crop of one repeat: the sample indices it is drawn from (one, or a pool's),
        #: which of its entry's crops it is, and how many crops that entry has
        self.order: list[tuple[range, int, int]] = []
        start = 0
        for entry in samples:
            members = range(start, start + (len(entry.samples) if isinstance(entry, Pool) else 1))
            start = members.stop
            crops = crops_of(entry, self.normalization, inverted_repeats, by_area)
            self.order += [(members, j, crops) for j in range(crops)]

    def set_epoch(self, epoch: int) -> None:
        """Draw a new set of crops (call at the start of every epoch; the trainer counts
        them from 1, and 0 is the epoch before any call)."""
        self.epoch = epoch

    def source(self, index: int) -> int:
        """The index in ``samples`` of the sample that item ``index`` crops this epoch. A
        pool's crops take its samples in turn, epoch after epoch, each lap in a seeded random
        order: every sample once before any twice."""
        members, j, crops = self.order[index % len(self.order)]
        if len(members) == 1:
            return members[0]
        passes = max(self.epoch - 1, 0)  # epochs 0 and 1 both start at the first turn
        turn = (passes * self.repeats + index // len(self.order)) * crops + j
        lap, at = divmod(turn, len(members))
        rng = np.random.default_rng([self.seed, members.start, lap])
        return members[rng.permutation(len(members))[at]]

    def __len__(self) -> int:
        return len(self.order) * self.repeats

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One crop.

        Returns
        -------
        image : (C, S, S) float32 tensor
        targets : (len(maps), S, S) float32 tensor of 0 and 1
        """
        which = self.source(index)
        sample = self.samples[which]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        raw = jitter_stain(sample.image, rng, self.augment)
        image = normalize(raw, self.normalization)
        crop, labels = random_crop(
            image, sample.labels, rng, self.augment, self.crop_size, self.scales[which]
        )
        targets = targets_from_labels(labels, self.maps, self.border_width)
        return torch.from_numpy(crop), torch.from_numpy(targets)
