"""A compact reference set of the shipped models' own training data, against forgetting.

A fine-tune on a few curated images of one kind pulls the network toward that kind and
away from the others it knew (measured: a third H&E set fell from 0.362 to 0.283 while
the curated kind rose). Two remedies live here, both on 256x256 crops of DSB2018 stage 1
(CC0, BBBC038v1; none of the StarDist test split or of the validation split), two per
kind of stage-1 image with eight samples or more, named ``<kind>--<id>.png``:

- ``replay/``: mixed into a fine-tune's training crops (:func:`replay_samples`);
- ``measure/``: scored before and after, kind by kind (:func:`kind_scores`), so that a
  drop is said rather than found later.

Written by ``scripts/pack_training_data.py --reference`` (``images/`` + ``masks/``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..io import Sample
from ..io.paired import list_pairs, read_pair, sample_id

ROOT = Path(__file__).parent
#: a kind of the reference set that falls by more than this DSB2018 score is said to be forgotten
FORGET_TOLERANCE = 0.02
#: the share of a fine-tune's training crops drawn from ``replay/`` by default; on 10 MoNuSeg
#: tiles 0.5 did no better than 0.3 over two runs of each (docs/generalisation.md)
REPLAY_SHARE = 0.3
#: replay crops a repeat at most, for each crop of ``replay/``: beside a large data set the
#: share is not drawn from a dozen crops shown dozens of times
MAX_REPLAY_REPEATS = 8
#: a fine-tune's learning rate (Adam): with the base's batch-norm statistics kept, 1e-3 wrecked
#: dsb2018-unet in two epochs (reference mean 0.46 -> 0.18, docs/generalisation.md); 3e-4
#: with :data:`FINETUNE_ANCHOR` gained more on unseen H&E tiles and lost less on the
#: reference kinds than 1e-4 without, in both pairs of runs (docs/generalisation.md)
FINETUNE_LR = 3e-4
#: a fine-tune's pull of every weight toward its base's (L2-SP, ``TrainConfig.anchor``)
FINETUNE_ANCHOR = 1.0
#: a fine-tune's passes and crops per sample a pass (the Train dock's and the command's): on 8
#: curated MoNuSeg tiles, 8 crops a tile gained as much in 8 epochs as crops by area
#: (docs/generalisation.md), where one a tile gained half as much
FINETUNE_EPOCHS = 10
FINETUNE_REPEATS = 8


def _read(part: str) -> list[Sample]:
    return [read_pair(path) for path in list_pairs(ROOT / part)]


def replay_samples() -> list[Sample]:
    """The samples a fine-tune mixes in to keep what its base knew."""
    return _read("replay")


def measure_samples() -> list[Sample]:
    """The samples that score, kind by kind, what a fine-tune forgot."""
    return _read("measure")


def without_measured(folders: Sequence[Path]) -> list[Path]:
    """``folders`` but the stage-1 samples of ``measure/`` (named by the start of their id):
    what scores forgetting is never trained on."""
    measured = tuple(path.stem.split("--", 1)[1] for path in list_pairs(ROOT / "measure"))
    return [f for f in folders if not sample_id(f).startswith(measured)]


def kind_of(sample: Sample) -> str:
    """The kind a reference sample stands for (its name's prefix)."""
    return sample.id.split("--", 1)[0]


def kind_scores(
    score: Callable[[Sequence[Sample]], float | None], samples: Sequence[Sample]
) -> dict[str, float] | None:
    """``score`` of the samples of each kind, by kind; None when ``score`` gave None (stopped)."""
    kinds = sorted({kind_of(s) for s in samples})
    out = {}
    for kind in kinds:
        value = score([s for s in samples if kind_of(s) == kind])
        if value is None:
            return None
        out[kind] = value
    return out


@dataclass(frozen=True)
class Forgetting:
    """A fine-tune's base and new model on the reference set's ``measure/`` part: DSB2018
    score kind by kind."""

    before: dict[str, float]
    after: dict[str, float]

    @property
    def forgotten(self) -> list[str]:
        """The kinds whose score fell by more than :data:`FORGET_TOLERANCE`."""
        return [k for k, v in self.before.items() if v - self.after[k] > FORGET_TOLERANCE]

    def lines(self) -> list[str]:
        """For users: each kind before and after, then a warning naming the kinds forgotten."""
        lost = self.forgotten
        lines = [
            f"{kind}: {before:.3f} -> {self.after[kind]:.3f}" + (" (forgotten)" * (kind in lost))
            for kind, before in self.before.items()
        ]
        if lost:
            lines.append(
                f"warning: {len(lost)} kind(s) of the reference set fell by more than "
                f"{FORGET_TOLERANCE}: {', '.join(lost)}; mix in more of the original data "
                "(a larger replay share, or the original training root)"
            )
        return lines


def add_replay(samples: list, share: float, crops: Callable[[Sample], int]) -> int:
    """Append the ``replay/`` samples to ``samples`` as one :class:`Pool` whose crops make
    ``share`` of the crops (``crops`` counts a sample's; at least one when ``share`` > 0, at
    most :data:`MAX_REPLAY_REPEATS` for each replay sample); return the crops added.

    Each replay crop is drawn from the whole set, so every kind is replayed in turn however
    few crops the share gives (a fixed few once replayed the first kinds only: on 8 curated
    H&E tiles, 3 crops a repeat kept the first kind and let five fall by 0.02-0.12)."""
    from ..training.dataset import Pool  # torch: not for the command's start-up

    if not 0 <= share < 1:
        raise ValueError(f"the replay share must be in [0, 1), got {share}")
    pool = replay_samples() if share > 0 else []
    if not pool:
        return 0
    wanted = round(sum(crops(s) for s in samples) * share / (1 - share))
    added = min(max(wanted, 1), MAX_REPLAY_REPEATS * len(pool))
    samples.append(Pool(tuple(pool), added))
    return added
