"""The training loop: a generator of progress that keeps the best checkpoint and can be cancelled.

>>> gen = train(config, train_samples, val_samples, TrainConfig(epochs=20), checkpoint="best.pt")
>>> result = drain(gen, lambda p: print(p))          # a script; napari wraps gen in a thread_worker

It yields a :class:`TrainProgress` after every optimiser step and at the end
of every epoch (with the validation DSB2018 score), returns a
:class:`TrainResult`, and stops within one step when ``should_stop()`` turns
true or the consumer closes the generator.
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import platform
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..devices import memory_format, resolve_device
from ..inference import drain
from ..io import Sample
from ..metrics import DatasetScore, score_dataset
from ..models import ModelConfig, SegmentationModel, save_checkpoint
from ..pipeline import segment
from ..runner import exact
from .augment import AugmentConfig
from .dataset import CropDataset

OPTIMIZERS = ("sgd", "rmsprop", "adam", "adamw")
SCHEDULES = ("cosine", "step", "constant")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of a training run (saved in the checkpoint's training info).

    Attributes
    ----------
    epochs, batch_size, crop_size : int
    repeats : int
        Crops per training sample per epoch.
    inverted_repeats : int
        Times more crops of bright-background (brightfield, H&E) samples.
    by_area : bool
        Crops of a sample in proportion to its area (large tiles give more).
    max_steps : int, optional
        Cap on the optimiser steps per epoch (quick runs, tests).
    optimizer : {"sgd", "rmsprop", "adam", "adamw"}
        SGD uses ``momentum`` and ``nesterov``; RMSProp uses ``momentum``.
    lr, momentum, weight_decay : float
        ``weight_decay`` is L2 (decoupled for "adamw").
    nesterov : bool
    schedule : {"cosine", "step", "constant"}
        Per-step cosine decay to ``lr * min_lr_factor``; or x ``step_gamma``
        every ``step_epochs`` epochs; or constant.
    warmup_steps : int
        Linear warm-up from 0 over the first steps.
    bce_weight, dice_weight : float
        Loss = bce_weight * BCE + dice_weight * (1 - soft Dice), Dice per map.
    gap_weight : float
        Extra BCE weight, in every map, on the pixels of the touching-border
        target: the gaps that split touching nuclei, which are few and
        otherwise under-learned (the U-Net paper's weight map, simplified).
        Needs a "border" map; 0 leaves the loss unweighted.
    border_width : int
        Radius of the touching-border target.
    ema_decay : float
        When above 0, an exponential moving average of the weights (and batch
        norm statistics), updated after every step with this decay, is what
        is validated and saved: it moves less from batch to batch than the
        raw weights, so the epoch picked on a small validation split is less
        a matter of luck. 0.995 averages about the last 200 steps.
    augment : AugmentConfig
    seed : int
    num_workers : int
        DataLoader worker processes (0: crops are made in the training process).
    amp : bool
        bfloat16 autocast on CUDA (ignored on CPU).
    keep_norm_stats : bool
        Batch norm keeps the running statistics it starts with (a base model's) and
        learns only its scale and shift. A fine-tune on a few images of one kind would
        otherwise re-estimate them on that kind alone, which moves every other kind.
    anchor : float
        Strength of an L2 pull of every weight toward its value at the start (a
        fine-tune's base), added to the loss as ``anchor / 2 * ||w - w_start||^2``
        (L2-SP, Li et al. 2018): weight decay pulls toward zero, which a network that
        already works has no reason to approach. 0: none.
    """

    epochs: int = 30
    batch_size: int = 8
    crop_size: int = 256
    repeats: int = 1
    inverted_repeats: int = 1
    by_area: bool = False
    max_steps: int | None = None
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    min_lr_factor: float = 0.01
    step_epochs: int = 10
    step_gamma: float = 0.1
    warmup_steps: int = 0
    bce_weight: float = 1.0
    dice_weight: float = 1.0
    gap_weight: float = 0.0
    border_width: int = 2
    ema_decay: float = 0.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0
    num_workers: int = 0
    amp: bool = True
    keep_norm_stats: bool = False
    anchor: float = 0.0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"
            )
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs and batch_size must be >= 1 and lr > 0")
        if self.gap_weight < 0:
            raise ValueError(f"gap_weight must be >= 0, got {self.gap_weight}")
        if self.anchor < 0:
            raise ValueError(f"anchor must be >= 0, got {self.anchor}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


@dataclass(frozen=True)
class TrainProgress:
    """One progress report: after a step (``phase="step"``) or an epoch (``phase="epoch"``).

    ``loss`` is the step's loss, or the epoch's mean loss at the end of an
    epoch, where ``val_score`` (DSB2018 score, None without validation data)
    and ``best_score`` are also set.
    """

    phase: str
    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float
    lr: float
    val_score: float | None = None
    best_score: float | None = None


@dataclass
class TrainResult:
    """What a run produced.

    Attributes
    ----------
    model : SegmentationModel
        Holding the best weights seen (by validation score, or by training
        loss without validation data), in eval mode.
    config : ModelConfig
        Its config, training info filled in.
    history : list of dict
        Per epoch: epoch, loss, val_score, lr, seconds.
    best_epoch : int or None
    best_score : float or None
        Best validation DSB2018 score.
    cancelled : bool
    checkpoint : Path or None
        Where the best checkpoint was written.
    """

    model: SegmentationModel
    config: ModelConfig
    history: list[dict]
    best_epoch: int | None
    best_score: float | None
    cancelled: bool
    checkpoint: Path | None


def bce_dice_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    bce_weight: float = 1.0,
    dice_weight: float = 1.0,
    pixel_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Binary cross-entropy plus (1 - soft Dice), Dice taken per map over the batch.

    Parameters
    ----------
    logits, targets : (N, M, H, W) float tensors
        Targets in [0, 1].
    pixel_weight : (N, 1, H, W) float tensor, optional
        Weight of each pixel's cross-entropy, the same for every map.
    """
    logits = logits.float()
    bce = F.binary_cross_entropy_with_logits(logits, targets, weight=pixel_weight)
    p = torch.sigmoid(logits)
    inter = (p * targets).sum(dim=(0, 2, 3))
    denom = p.sum(dim=(0, 2, 3)) + targets.sum(dim=(0, 2, 3))
    dice = ((2 * inter + 1) / (denom + 1)).mean()
    return bce_weight * bce + dice_weight * (1 - dice)


def gap_weighting(
    maps: Sequence[str], gap_weight: float
) -> Callable[[torch.Tensor], torch.Tensor | None]:
    """Targets -> per-pixel BCE weights, 1 + ``gap_weight`` on the touching-border target.

    None (an unweighted loss) when ``gap_weight`` is 0.
    """
    if gap_weight == 0:
        return lambda targets: None
    if "border" not in maps:
        raise ValueError(f"gap_weight needs a 'border' map; this model predicts {', '.join(maps)}")
    i = list(maps).index("border")
    return lambda targets: 1 + gap_weight * targets[:, i : i + 1]


def make_optimizer(
    params: Iterable[torch.nn.Parameter], settings: TrainConfig
) -> torch.optim.Optimizer:
    """The optimiser named by ``settings.optimizer``, with L2 weight decay."""
    wd, lr = settings.weight_decay, settings.lr
    if settings.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=lr,
            momentum=settings.momentum,
            nesterov=settings.nesterov and settings.momentum > 0,
            weight_decay=wd,
        )
    if settings.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=settings.momentum, weight_decay=wd)
    if settings.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    return torch.optim.Adam(params, lr=lr, weight_decay=wd)


def lr_factor(step: int, total_steps: int, steps_per_epoch: int, settings: TrainConfig) -> float:
    """The learning-rate multiplier at optimiser step ``step`` (0-based) of ``total_steps``."""
    warm = min(1.0, (step + 1) / settings.warmup_steps) if settings.warmup_steps else 1.0
    if settings.schedule == "cosine":
        t = min(step / max(total_steps - 1, 1), 1.0)
        floor = settings.min_lr_factor
        return warm * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))
    if settings.schedule == "step":
        return warm * settings.step_gamma ** (
            step // max(steps_per_epoch * settings.step_epochs, 1)
        )
    return warm


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores"
    return f"{device.type}: {where}; torch {torch.__version__}"


def evaluate(
    model: SegmentationModel,
    config: ModelConfig,
    samples: Sequence[Sample],
    device: str | torch.device | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> DatasetScore | None:
    """DSB2018 score of a model on annotated samples (whole images, the config's thresholds,
    the nucleus diameter estimated as at inference).

    Returns
    -------
    DatasetScore or None
        None when ``should_stop()`` turned true part-way.
    """
    pairs = []
    with exact():  # float, also where int8 is the CPU's default: the scores choose checkpoints
        for sample in samples:
            if should_stop is not None and should_stop():
                return None
            _, (labels,) = drain(
                segment(model, config, sample.image, device=device, diameter="auto")
            )
            pairs.append((sample.id, sample.labels, labels))
    return score_dataset(pairs)


def _validate_train(
    config: ModelConfig, model: SegmentationModel, train_samples: Sequence[Sample]
) -> None:
    if not train_samples:
        raise ValueError("no training samples")
    if model.in_channels != config.in_channels or model.out_channels != config.out_channels:
        raise ValueError(
            f"model has {model.in_channels} -> {model.out_channels} channels but the config "
            f"says {config.in_channels} -> {config.out_channels}"
        )


def train(
    config: ModelConfig,
    train_samples: Sequence[Sample],
    val_samples: Sequence[Sample] = (),
    settings: TrainConfig | None = None,
    *,
    model: SegmentationModel | None = None,
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    should_stop: Callable[[], bool] | None = None,
) -> Generator[TrainProgress, None, TrainResult]:
    """Train or fine-tune a model; yields :class:`TrainProgress`, returns :class:`TrainResult`.

    Parameters
    ----------
    config : ModelConfig
        Architecture, normalisation and maps; ``config.training`` may already
        hold ``data_roots`` and ``exclude_ids`` (they are kept).
    train_samples : sequence of Sample
        Annotated samples to train on.
    val_samples : sequence of Sample
        Annotated samples scored (DSB2018) after every epoch; the best epoch's
        weights are kept. Empty: the lowest training loss decides.
    settings : TrainConfig, optional
    model : SegmentationModel, optional
        Starting weights (fine-tuning); a new model from ``config`` (seeded) otherwise.
    checkpoint : path-like, optional
        Where the best checkpoint is written (atomically) whenever it improves.
    device : str or torch.device
        "auto" (CUDA, then MPS, then CPU), "cpu", "cuda", "mps".
    should_stop : callable () -> bool, optional
        Polled before every step and between validation images; when true,
        training stops and returns promptly, keeping the best weights so far.
    """
    settings = settings or TrainConfig()
    dev = resolve_device(device)
    torch.manual_seed(settings.seed)
    if model is None:
        model = config.build()
    _validate_train(config, model, train_samples)
    gap = gap_weighting(config.maps, settings.gap_weight)
    layout = memory_format(dev)
    model.to(dev, memory_format=layout).train()
    if settings.keep_norm_stats:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()  # normalises with its running statistics, and leaves them
    stop = should_stop or (lambda: False)

    dataset = CropDataset(
        train_samples,
        maps=config.maps,
        normalization=config.normalization,
        augment=settings.augment,
        crop_size=settings.crop_size,
        repeats=settings.repeats,
        inverted_repeats=settings.inverted_repeats,
        by_area=settings.by_area,
        border_width=settings.border_width,
        diameter=config.diameter,
        seed=settings.seed,
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=settings.batch_size,
        shuffle=True,
        drop_last=len(dataset) > settings.batch_size,
        num_workers=settings.num_workers,
        generator=torch.Generator().manual_seed(settings.seed),
        pin_memory=dev.type == "cuda",
    )
    steps = len(loader) if settings.max_steps is None else min(len(loader), settings.max_steps)
    total_steps = steps * settings.epochs
    optimizer = make_optimizer(model.parameters(), settings)
    start = [(w, w.detach().clone()) for w in model.parameters()] if settings.anchor else []
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, steps, settings)
    )
    autocast = dev.type == "cuda" and settings.amp
    # the weights that are validated and kept: the raw ones, or their moving average
    averaged = None
    if settings.ema_decay > 0:
        ema_fn = torch.optim.swa_utils.get_ema_multi_avg_fn(settings.ema_decay)
        averaged = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=ema_fn, use_buffers=True)
    kept = model if averaged is None else averaged.module

    history: list[dict] = []
    best_state, best_epoch, best_score, best_loss = None, None, None, math.inf
    cancelled = False
    info = replace(
        config.training,
        val_ids=[s.id for s in val_samples],
        machine=_machine(dev),
        settings=asdict(settings),
    )
    result_config = replace(config, training=info)
    ckpt = Path(checkpoint) if checkpoint is not None else None

    for epoch in range(1, settings.epochs + 1):
        started = time.perf_counter()
        dataset.set_epoch(epoch)
        losses = []
        for step, (x, y) in enumerate(itertools.islice(loader, steps), start=1):
            if stop():
                cancelled = True
                break
            x = x.to(dev, non_blocking=True, memory_format=layout)
            y = y.to(dev, non_blocking=True)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
                logits = model(x)
            loss = bce_dice_loss(logits, y, settings.bce_weight, settings.dice_weight, gap(y))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for w, w0 in start:  # the anchor's gradient: anchor * (w - w_start)
                if w.grad is not None:
                    w.grad.add_(w.detach() - w0, alpha=settings.anchor)
            optimizer.step()
            if averaged is not None:
                averaged.update_parameters(model)
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            losses.append(float(loss.detach()))
            yield TrainProgress("step", epoch, settings.epochs, step, steps, losses[-1], lr)
        if cancelled or not losses:
            break
        mean_loss = float(np.mean(losses))
        score = evaluate(kept, result_config, val_samples, dev, stop) if val_samples else None
        if val_samples and score is None:
            cancelled = True
            break
        val = score.score if score is not None else None
        if val is not None:
            improved = best_score is None or val > best_score
        else:
            improved = mean_loss < best_loss
        history.append(
            {
                "epoch": epoch,
                "loss": mean_loss,
                "val_score": val,
                "lr": lr,
                "seconds": time.perf_counter() - started,
            }
        )
        if improved:
            best_epoch, best_score, best_loss = epoch, val, mean_loss
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in kept.state_dict().items()})
            if ckpt is not None:
                scores = {"best_epoch": epoch, "train_loss": mean_loss}
                if score is not None:
                    scores.update(val_dsb=val, val_ap=score.as_dict()["ap"], n_val=len(val_samples))
                card = replace(result_config, training=replace(info, epochs=epoch, scores=scores))
                save_checkpoint(ckpt, kept, card)
        yield TrainProgress(
            "epoch", epoch, settings.epochs, len(losses), steps, mean_loss, lr, val, best_score
        )
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    scores = {"best_epoch": best_epoch, "history": history}
    if best_score is not None:
        scores["val_dsb"] = best_score
    final = replace(result_config, training=replace(info, epochs=len(history), scores=scores))
    return TrainResult(
        model, final, history, best_epoch, best_score, cancelled, ckpt if best_state else None
    )
