"""Fine-tune a model on curated stage-1 roots and compare it with its base (napari-free).

>>> plan = plan_validation(["curated/"], fraction=0.2)
>>> gen = finetune("dsb2018-unet", ["curated/"], finetune_settings(epochs=5), output="new.pt")
>>> result = drain(gen)  # napari_nucleiseg.inference.drain; the widget wraps gen in a worker
>>> result.base_score, result.new_score
>>> result.commit()  # the staged checkpoint becomes new.pt (result.discard() drops it)

Validation samples are those flagged ``"split": "validation"`` in the curated
roots' ``manifest.json`` (written by the correction widget's export); when none
is flagged, a seeded fraction of the curated samples is held out. Only curated
samples validate: the optional original training data only adds training
samples (minus the base model's excluded ids, which stay unseen).

The checkpoint is written once, at the end, with its model card (the training
info of :class:`~napari_nucleiseg.training.TrainResult` plus the base model's
name and score), to a hidden staging file beside the output; the caller commits
it (:meth:`FinetuneResult.commit`) or discards it. The commit is left to the
caller so that it runs on the thread that also handles Cancel: a Cancel that
arrives while the worker saves still means that nothing was written. A
cancelled run writes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .devices import resolve_device
from .errors import FileProblem
from .io import Sample
from .io.atomic import check_writable_folder, file_problem, partial_path, remove_stale
from .io.manifest import read_manifest
from .io.paired import read_annotated, sample_id
from .models import ModelConfig, load_model, save_checkpoint
from .models.checkpoint import TrainingInfo
from .reference import (
    FINETUNE_ANCHOR,
    FINETUNE_EPOCHS,
    FINETUNE_LR,
    FINETUNE_REPEATS,
    REPLAY_SHARE,
    Forgetting,
    add_replay,
    kind_scores,
    measure_samples,
    without_measured,
)
from .training import TrainConfig, TrainProgress, TrainResult, evaluate, find_samples, train
from .training.dataset import crops_of

FLAGGED, HELD_OUT, NONE = "flagged", "held-out", "none"


@dataclass(frozen=True)
class Validation:
    """Which curated samples validate, and how they were chosen.

    Attributes
    ----------
    curated : list of Path
        All curated sample folders, in root order.
    ids : list of str
        Ids of the validation samples.
    how : {"flagged", "held-out", "none"}
        Flagged in the manifests, a held-out fraction, or no validation at all.
    """

    curated: list[Path]
    ids: list[str]
    how: str

    def describe(self) -> str:
        """One line for users: how many samples validate and why those."""
        n, total = len(self.ids), len(self.curated)
        if self.how == FLAGGED:
            return f"{n} of {total} curated samples flagged 'validation' in the manifests"
        if self.how == HELD_OUT:
            return (
                f"none flagged 'validation': holding out {n} of {total} curated samples at random"
            )
        return f"no validation samples ({total} curated); the base and new models are not compared"


@dataclass(frozen=True)
class Stage:
    """Progress outside the training loop: reading samples or scoring the base model."""

    text: str
    done: int
    total: int


@dataclass
class FinetuneResult:
    """What a fine-tuning run produced.

    Attributes
    ----------
    train : TrainResult or None
        None when the run was cancelled before training began.
    validation : Validation
    n_train : int
        Training samples (curated plus original).
    base_score, new_score : float or None
        DSB2018 score of the base and of the new model on the validation samples.
    n_replay : int
        Training crops a repeat draws from the shipped reference set's ``replay/`` part.
    reference : Forgetting or None
        The base and the new model on the reference set's ``measure/`` part (None when not
        measured).
    checkpoint : Path or None
        The output path once :meth:`commit` moved the staged checkpoint there, else None.
    cancelled : bool
    output : Path or None
        Where :meth:`commit` puts the checkpoint.
    staged : Path or None
        The hidden file holding the new checkpoint until :meth:`commit` or :meth:`discard`.
    overwrite : bool
        Whether :meth:`commit` may replace an existing ``output``.
    """

    train: TrainResult | None
    validation: Validation
    n_train: int
    base_score: float | None
    new_score: float | None
    checkpoint: Path | None
    cancelled: bool
    output: Path | None = None
    staged: Path | None = None
    overwrite: bool = False
    n_replay: int = 0
    reference: Forgetting | None = None

    def commit(self) -> Path:
        """Move the staged checkpoint to ``output``; returns that path.

        Raises
        ------
        FileProblem
            Nothing was staged (a cancelled run), or ``output`` appeared
            meanwhile and may not be replaced; the staged file is then removed.
        """
        if self.staged is None or self.output is None:
            raise FileProblem(self.output or "checkpoint", "was not written: the run was cancelled")
        try:
            _check_output(self.output, self.overwrite)  # nobody wrote it meanwhile
            os.replace(self.staged, self.output)
        except OSError as exc:
            self.discard()
            raise file_problem(self.output, exc) from exc
        except FileProblem:
            self.discard()
            raise
        self.staged, self.checkpoint = None, self.output
        return self.output

    def discard(self) -> None:
        """Remove the staged checkpoint, if any (a Cancel that came while it was saved)."""
        if self.staged is not None:
            self.staged.unlink(missing_ok=True)
            self.staged = None


def _manifest_root(path: Path) -> Path:
    """The folder whose manifest describes ``path`` (a root, or a sample folder's root)."""
    return path.parent if (path / "images").is_dir() else path


def plan_validation(
    roots: Sequence[str | os.PathLike], fraction: float = 0.2, seed: int = 0
) -> Validation:
    """Choose the validation samples of curated roots (cheap: folder listings and manifests).

    Parameters
    ----------
    roots : sequence of path-like
        Curated stage-1 roots or sample folders.
    fraction : float
        Share held out when no sample is flagged "validation" (at least one of
        two or more samples when ``fraction > 0``).
    seed : int
        Seeds the held-out draw.

    Raises
    ------
    FileProblem
        A root that does not exist or holds no sample, or an unreadable manifest.
    ValueError
        No root given.
    """
    if not roots:
        raise ValueError("no curated root given")
    curated = find_samples([Path(r) for r in roots])
    ids = {sample_id(f) for f in curated}
    flagged = set()
    for root in roots:
        manifest = read_manifest(_manifest_root(Path(root)))
        flagged |= {k for k, v in manifest.items() if v.get("split") == "validation"} & ids
    if flagged:
        return Validation(
            curated, [sample_id(f) for f in curated if sample_id(f) in flagged], FLAGGED
        )
    n = min(max(round(fraction * len(curated)), 1), len(curated) - 1) if fraction > 0 else 0
    if n <= 0:
        return Validation(curated, [], NONE)
    order = np.random.default_rng(seed).permutation(len(curated))[:n]
    return Validation(curated, [sample_id(curated[i]) for i in sorted(order)], HELD_OUT)


def finetune_config(
    base: ModelConfig,
    data_roots: Sequence[str | os.PathLike],
    source: str | os.PathLike = "",
    exclude_ids: Sequence[str] = (),
) -> ModelConfig:
    """The base model's config with a new training record: its data roots plus ``data_roots``,
    its excluded ids plus ``exclude_ids`` (what the base never saw, a fine-tune never sees:
    the test images stay unseen). The one fine-tune record of the Train dock and the CLI.

    ``source`` (the base's name or path) goes into the record's lineage.
    """
    roots = list(base.training.data_roots)
    roots += [r for r in (str(Path(d).resolve()) for d in data_roots) if r not in roots]
    info = TrainingInfo(
        data_roots=roots,
        exclude_ids=sorted({*base.training.exclude_ids, *exclude_ids}),
        base=base.training.lineage(source),
    )
    return replace(base, training=info)


def reference_scores(
    model, config: ModelConfig, measured: Sequence[Sample], device, stop=None
) -> dict[str, float] | None:
    """DSB2018 score of a model on the reference set's ``measure/`` samples, kind by kind;
    None when ``stop()`` turned true."""

    def score(some: Sequence[Sample]) -> float | None:
        found = evaluate(model, config, some, device, stop)
        return None if found is None else float(found.score)

    return kind_scores(score, measured)


def crops_counter(config: ModelConfig, settings: TrainConfig) -> Callable[[Sample], int]:
    """A sample's crops in one repeat of the training with ``settings``."""
    return lambda s: crops_of(s, config.normalization, settings.inverted_repeats, settings.by_area)


def _check_output(output: Path, overwrite: bool) -> None:
    if output.exists() and not overwrite:
        raise FileProblem(output, "already exists; choose another path or allow overwriting")
    if output.exists() and not output.is_file():
        raise FileProblem(output, "is not a file")
    check_writable_folder(output.parent)  # tried, not os.access: root passes every test


def finetune_settings(**changes) -> TrainConfig:
    """:class:`TrainConfig` with a fine-tune's defaults, changed by ``changes``: learning rate
    :data:`~napari_nucleiseg.reference.FINETUNE_LR`, the weights pulled toward the base's
    (:data:`~napari_nucleiseg.reference.FINETUNE_ANCHOR`) and the base's batch-norm statistics
    kept, so that a few images of one kind do not move what the base knew of the others;
    :data:`~napari_nucleiseg.reference.FINETUNE_EPOCHS` passes of
    :data:`~napari_nucleiseg.reference.FINETUNE_REPEATS` crops a sample, since a few curated
    images give few crops. The Train dock and ``nucleiseg train --base-model`` start here."""
    defaults = {
        "lr": FINETUNE_LR, "anchor": FINETUNE_ANCHOR, "keep_norm_stats": True,
        "epochs": FINETUNE_EPOCHS, "repeats": FINETUNE_REPEATS,
    }  # fmt: skip
    return TrainConfig(**(defaults | changes))


def finetune(
    base: str | os.PathLike,
    curated_roots: Sequence[str | os.PathLike],
    settings: TrainConfig,
    *,
    output: str | os.PathLike,
    original_root: str | os.PathLike | None = None,
    val_fraction: float = 0.2,
    overwrite: bool = False,
    device: str = "auto",
    replay: float = REPLAY_SHARE,
    reference: bool = True,
    should_stop: Callable[[], bool] | None = None,
) -> Generator[Stage | TrainProgress, None, FinetuneResult]:
    """Fine-tune ``base`` on curated samples; yields progress, returns a :class:`FinetuneResult`.

    Parameters
    ----------
    base : str or path-like
        A shipped model name or a checkpoint file.
    curated_roots : sequence of path-like
        Curated stage-1 roots (or sample folders); see :func:`plan_validation`.
    settings : TrainConfig
        Epochs, optimiser, learning rate, weight decay, crops, ...; start from
        :func:`finetune_settings` (a plain ``TrainConfig`` trains at a new network's rate).
    output : path-like
        The checkpoint to write at the end.
    original_root : path-like, optional
        More training data (e.g. the original stage-1 root); its samples whose
        id is curated, validating, or excluded by the base model are skipped.
    val_fraction : float
        Held-out share when no curated sample is flagged "validation".
    replay : float
        Share of the training crops drawn from the shipped reference set's ``replay/``
        part (stage-1 crops of every kind), so that the new model keeps what its base
        knew; 0, or an ``original_root``, draws none.
    reference : bool
        Score the base and the new model on the reference set's ``measure/`` part, kind by
        kind (:attr:`FinetuneResult.reference`).
    overwrite : bool
        Replace an existing ``output`` (otherwise it is refused up front).
    device : str
        "auto", "cpu", "cuda" or "mps".
    should_stop : callable () -> bool, optional
        Polled between samples read, validation images and optimiser steps.

    Yields
    ------
    Stage or TrainProgress

    Raises
    ------
    FileProblem
        A bad root, base checkpoint or output path (the message names it).
    ValueError
        An unavailable device, or no training sample left.
    """
    stop = should_stop or (lambda: False)
    output = Path(output)
    _check_output(output, overwrite)
    remove_stale(output)
    dev = resolve_device(device)
    model, base_config = load_model(base, device=dev)
    validation = plan_validation(curated_roots, val_fraction, settings.seed)
    folders = list(validation.curated)
    measured = measure_samples() if reference else []
    if original_root is not None:  # the reference set's measured images stay unseen
        skip = {sample_id(f) for f in folders} | set(base_config.training.exclude_ids)
        folders += without_measured(find_samples(original_root, exclude_ids=skip))
    samples: list[Sample] = []
    for i, folder in enumerate(folders):
        if stop():
            return FinetuneResult(None, validation, 0, None, None, None, True)
        yield Stage("Reading samples", i, len(folders))
        sample = read_annotated(folder)
        if sample.labels is None:
            raise FileProblem(folder, "has no masks/ folder; training needs annotated samples")
        samples.append(sample)
    val_ids = set(validation.ids)
    val = [s for s in samples if s.id in val_ids]
    train_samples = [s for s in samples if s.id not in val_ids]
    if not train_samples:
        raise ValueError("no training sample left: every curated sample is flagged 'validation'")
    n_train, n_replay = len(train_samples), 0
    if replay > 0 and original_root is None:
        n_replay = add_replay(train_samples, replay, crops_counter(base_config, settings))

    def cancelled() -> FinetuneResult:
        return FinetuneResult(None, validation, n_train, base_score, None, None, True)

    base_score = before = None
    if val:
        yield Stage("Scoring the base model", 0, len(val))
        score = evaluate(model, base_config, val, dev, stop)
        if score is None:
            return cancelled()
        base_score = float(score.score)
    if measured:
        yield Stage("Scoring the base model on the reference set", 0, len(measured))
        before = reference_scores(model, base_config, measured, dev, stop)
        if before is None:
            return cancelled()

    roots = [*curated_roots, *([original_root] if original_root is not None else [])]
    config = finetune_config(base_config, roots, base)
    result = yield from train(
        config, train_samples, val, settings, model=model, device=dev, should_stop=stop
    )
    new_score = None if result.best_score is None else float(result.best_score)
    if result.cancelled or stop():
        return FinetuneResult(result, validation, n_train, base_score, new_score, None, True)
    after = None
    if measured:
        yield Stage("Scoring the new model on the reference set", 0, len(measured))
        after = reference_scores(result.model, result.config, measured, dev, stop)
        if after is None:
            return FinetuneResult(result, validation, n_train, base_score, new_score, None, True)
    scores = dict(result.config.training.scores)
    scores.update(
        base_model=str(base),
        validation=validation.how,
        n_train=n_train,
        n_val=len(val),
        n_replay_crops=n_replay,
    )
    if base_score is not None:
        scores["base_val_dsb"] = base_score
    forgetting = None if after is None else Forgetting(before, after)
    if forgetting is not None:
        scores["reference_before"], scores["reference_after"] = before, after
    card = replace(result.config, training=replace(result.config.training, scores=scores))
    result.config = card
    _check_output(output, overwrite)  # nobody wrote it meanwhile
    yield Stage("Saving the new model", 0, 1)
    staged = partial_path(output)  # a killed run's is removed by the next (remove_stale)
    save_checkpoint(staged, result.model, card)
    return FinetuneResult(
        result, validation, n_train, base_score, new_score, None, False,
        output=output, staged=staged, overwrite=overwrite, n_replay=n_replay,
        reference=forgetting,
    )  # fmt: skip
