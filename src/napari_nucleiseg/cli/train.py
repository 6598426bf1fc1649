"""``nucleiseg train DATA... -o CHECKPOINT``: train or fine-tune a model on stage-1 roots."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from ..errors import FileProblem
from ..reference import (
    FINETUNE_ANCHOR,
    FINETUNE_EPOCHS,
    FINETUNE_LR,
    FINETUNE_REPEATS,
    REPLAY_SHARE,
)
from . import add_device, number_within, positive_number, use_backend

if TYPE_CHECKING:  # the models import torch: the command loads them only when it runs
    from ..models import ModelConfig, TrainingInfo

#: what ``nucleiseg train`` builds where an option is not given (a fine-tune keeps its base's)
NEW_NETWORK = {"model": "unet", "depth": 4, "channels": "grey", "maps": "body,border,contour"}
#: ``--width`` when not given, by architecture
NEW_WIDTH = {"unet": 16, "linknet": 32}
#: passes of a network trained from scratch (a fine-tune's: reference.FINETUNE_EPOCHS)
NEW_EPOCHS = 30
#: what ``--maps`` takes: the border map, or the border and contour maps, separate touching nuclei
MAP_CHOICES = ("body,border", "body,border,contour")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``train`` sub-command to the ``nucleiseg`` sub-parsers."""
    p = sub.add_parser("train", help="train or fine-tune a model on stage-1 roots")
    p.add_argument("data", nargs="+", help="stage-1 roots or sample folders (several allowed)")
    p.add_argument("-o", "--output", required=True, help="checkpoint to write (.pt)")
    p.add_argument(
        "--model",
        choices=["unet", "linknet"],
        help=f"architecture (default: {NEW_NETWORK['model']})",
    )
    p.add_argument(
        "--base-model",
        help="fine-tune this shipped model name or checkpoint; the network options (--model, "
        "--width, --depth, --upsampling, --channels, --maps) are then its own",
    )
    p.add_argument(
        "--replay",
        type=number_within(0, 1, below_high=True),
        default=REPLAY_SHARE,
        help="with --base-model: share of the training crops drawn from the shipped reference "
        "set of stage-1 kinds, so that the model keeps what it knew (0: none); "
        "the base and the new model are scored on the set's other images, kind by kind, and "
        "a kind down by more than 0.02 is said",
    )
    p.add_argument(
        "--anchor",
        type=float,
        help="with --base-model: strength of an L2 pull of every weight toward the base's "
        f"(L2-SP), so that the network moves only where the new data needs it (default "
        f"{FINETUNE_ANCHOR}; 0: none)",
    )
    p.add_argument(
        "--learn-norm-stats",
        action="store_true",
        help="with --base-model: re-estimate batch norm's statistics on the new data (by "
        "default a fine-tune keeps its base's, so that the kinds it knew keep their scores)",
    )
    p.add_argument(
        "--width",
        type=int,
        help=f"U-Net base width (default: {NEW_WIDTH['unet']}) "
        f"or LinkNet width (default: {NEW_WIDTH['linknet']})",
    )
    p.add_argument("--depth", type=int, help=f"U-Net depth (default: {NEW_NETWORK['depth']})")
    p.add_argument(
        "--upsampling",
        choices=["transpose", "resize"],
        help="U-Net upsampling (default: transpose)",
    )
    p.add_argument(
        "--channels",
        choices=["grey", "rgb"],
        help=f"what the network sees (default: {NEW_NETWORK['channels']})",
    )
    p.add_argument(
        "--maps",
        choices=MAP_CHOICES,
        metavar="MAPS",
        help=f"what the network predicts: {' or '.join(MAP_CHOICES)} "
        f"(default: {NEW_NETWORK['maps']}); the border and contour separate touching nuclei",
    )
    p.add_argument(
        "--epochs",
        type=_positive,
        help=f"passes over the training samples (default: {NEW_EPOCHS}, or {FINETUNE_EPOCHS} "
        "for a fine-tune)",
    )
    p.add_argument(
        "--steps-per-epoch", type=int, help="cap on optimiser steps per epoch (default: none)"
    )
    p.add_argument("--batch-size", type=int, default=8, help="crops per optimiser step")
    p.add_argument("--crop-size", type=int, default=256, help="side of a training crop in pixels")
    p.add_argument(
        "--repeats",
        type=_positive,
        help=f"crops per sample per epoch (default: 1, or {FINETUNE_REPEATS} for a fine-tune: "
        "a few curated images give few crops)",
    )
    p.add_argument(
        "--inverted-repeats",
        type=_positive,
        default=1,
        help="times more crops of bright-background (brightfield, H&E) samples",
    )
    p.add_argument(
        "--crops-by-area",
        action="store_true",
        help="crops of a sample in proportion to its area (one per 512x512 pixels)",
    )
    p.add_argument(
        "--optimizer", choices=["sgd", "rmsprop", "adam"], default="adam", help="optimiser"
    )
    p.add_argument(
        "--lr",
        type=float,
        help=f"learning rate (default: 0.001, or {FINETUNE_LR} for a fine-tune: a larger first "
        "step of Adam's moves every weight of a trained network at once)",
    )
    p.add_argument("--weight-decay", type=float, default=1e-4, help="L2 weight decay")
    p.add_argument(
        "--gap-weight",
        type=_non_negative,
        default=0.0,
        help="extra loss weight on the gaps between touching nuclei (0: none)",
    )
    p.add_argument(
        "--ema",
        type=float,
        default=0.0,
        help="validate and keep a moving average of the weights with this decay, "
        "e.g. 0.995 (0: the raw weights)",
    )
    p.add_argument(
        "--diameter",
        type=positive_number,
        help="resize every training sample so that its median nucleus is this many pixels "
        "wide, and record it: inference then resizes images likewise (default: samples as "
        "they are, or the base model's)",
    )
    p.add_argument(
        "--zoom",
        type=_zoom_range,
        help="random zoom range LOW,HIGH of the augmentation (default: 0.6,1.6)",
    )
    p.add_argument(
        "--stain",
        type=_non_negative,
        help="haematoxylin-eosin stain jitter of colour images (default: 0.2; 0: off)",
    )
    p.add_argument(
        "--time-limit",
        type=positive_number,
        help="stop after this many minutes, keeping the best weights so far",
    )
    p.add_argument("--exclude-ids", help="file of ids never to train on")
    p.add_argument("--val-ids", help="file of ids to validate on (DSB2018 score each epoch)")
    add_device(p)
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the weights, crops and augmentation"
    )
    p.add_argument("--workers", type=int, default=0, help="data-loading processes")
    p.add_argument("--threads", type=int, help="CPU threads for PyTorch (default: PyTorch's)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint")
    p.set_defaults(func=cmd_train)
    return p


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _zoom_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be LOW,HIGH such as 0.5,2, got {text!r}") from None
    if not 0 < low <= high < float("inf"):
        raise argparse.ArgumentTypeError(f"needs 0 < LOW <= HIGH, got {text!r}")
    return low, high


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _new_network(args: argparse.Namespace, info: TrainingInfo) -> ModelConfig:
    """The config of a network trained from scratch: the options given, else ``NEW_NETWORK``."""
    from ..models import ModelConfig
    from ..preprocess import NormalizeConfig

    o = {k: v if getattr(args, k) is None else getattr(args, k) for k, v in NEW_NETWORK.items()}
    width = args.width or NEW_WIDTH[o["model"]]
    if o["model"] == "unet":
        kwargs = {"depth": o["depth"], "base": width}
        kwargs |= {"upsampling": args.upsampling} if args.upsampling else {}
    else:
        kwargs = {"width": width}
    return ModelConfig(
        o["model"],
        kwargs,
        maps=tuple(o["maps"].split(",")),
        normalization=NormalizeConfig(channels=o["channels"]),
        training=info,
    )


def _network_changes(args: argparse.Namespace, base: ModelConfig) -> list[str]:
    """The network options given that differ from how ``base``'s network was built."""
    from ..models.registry import default_arguments

    kw = default_arguments(base.architecture) | base.arch_kwargs
    built = {
        "model": base.architecture,
        "width": kw.get("base", kw.get("width")),
        "depth": kw.get("depth", "none"),
        "upsampling": kw.get("upsampling", "none"),
        "channels": base.normalization.channels,
        "maps": ",".join(base.maps),
    }
    given = {k: getattr(args, k) for k in built if getattr(args, k) is not None}
    return [f"--{k} {v} (it has {built[k]})" for k, v in given.items() if str(v) != str(built[k])]


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from ..devices import resolve_device
    from ..finetune import crops_counter, finetune_config, finetune_settings, reference_scores
    from ..inference import drain
    from ..models import load_model, resolve_checkpoint, save_checkpoint
    from ..models.checkpoint import TrainingInfo
    from ..reference import Forgetting, add_replay, measure_samples, without_measured
    from ..training import (
        AugmentConfig,
        TrainConfig,
        find_samples,
        read_ids,
        read_samples,
        split_samples,
        train,
    )

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise FileProblem(out, "already exists; choose another path or pass --overwrite")
    if not out.parent.is_dir():
        raise FileProblem(out.parent, "does not exist")
    if args.base_model:  # checked before the data are read
        model, base = load_model(args.base_model, device="cpu")
        changes = _network_changes(args, base)
        if changes:  # a fine-tune keeps its base's network
            raise FileProblem(
                resolve_checkpoint(args.base_model),
                f"is fine-tuned as it was built; {', '.join(changes)} would change its network",
            )
    if args.threads:
        torch.set_num_threads(args.threads)
    exclude = read_ids(args.exclude_ids) if args.exclude_ids else []
    if args.base_model:  # the base's network, and what the base never saw stays unseen
        config = finetune_config(base, args.data, args.base_model, exclude)
        exclude = config.training.exclude_ids
    val_ids = read_ids(args.val_ids) if args.val_ids else []
    folders = find_samples(args.data, exclude_ids=set(exclude))
    if args.base_model:  # what scores forgetting is never trained on
        folders = without_measured(folders)
    print(f"reading {len(folders)} samples ...", file=sys.stderr)
    train_samples, val_samples = split_samples(read_samples(folders), val_ids)
    if not train_samples:
        raise FileProblem(args.data[0], "leaves no training sample after the exclusions")
    if not args.base_model:
        info = TrainingInfo(
            data_roots=[str(Path(d).resolve()) for d in args.data], exclude_ids=sorted(exclude)
        )
        model, config = None, _new_network(args, info)
    if args.diameter:
        config = replace(config, diameter=args.diameter)
    augment = AugmentConfig()
    if args.zoom:
        augment = replace(augment, zoom=args.zoom)
    if args.stain is not None:
        augment = replace(augment, stain=args.stain)
    # a fine-tune starts from finetune_settings (its learning rate, its base's statistics)
    tuned = {"keep_norm_stats": not args.learn_norm_stats}
    if args.anchor is not None:
        tuned["anchor"] = args.anchor
    make, extra = (finetune_settings, tuned) if args.base_model else (TrainConfig, {})
    if not args.base_model:
        extra["epochs"] = NEW_EPOCHS
    given = {"lr": args.lr, "epochs": args.epochs, "repeats": args.repeats}
    extra.update({k: v for k, v in given.items() if v is not None})
    settings = make(
        augment=augment,
        batch_size=args.batch_size,
        crop_size=args.crop_size,
        inverted_repeats=args.inverted_repeats,
        by_area=args.crops_by_area,
        max_steps=args.steps_per_epoch,
        optimizer=args.optimizer,
        weight_decay=args.weight_decay,
        gap_weight=args.gap_weight,
        ema_decay=args.ema,
        seed=args.seed,
        num_workers=args.workers,
        **extra,
    )
    device = resolve_device(args.device)
    use_backend(args, device, exact=True)  # the validation's forward passes, in float
    print(
        f"training {config.architecture} on {len(train_samples)} samples "
        f"({len(val_samples)} for validation) on {device}",
        file=sys.stderr,
    )
    measured, before = [], None
    if args.base_model:
        if args.replay > 0:
            n = add_replay(train_samples, args.replay, crops_counter(config, settings))
            print(f"mixing in {n} crops a repeat of the reference set", file=sys.stderr)
        measured = measure_samples()
        print(f"scoring {args.base_model} on the reference set ...", file=sys.stderr)
        before = reference_scores(model, base, measured, device)
    deadline = time.monotonic() + 60 * args.time_limit if args.time_limit else None
    gen = train(
        config,
        train_samples,
        val_samples,
        settings,
        model=model,
        checkpoint=out,
        device=device,
        should_stop=None if deadline is None else lambda: time.monotonic() > deadline,
    )
    bar = None

    def show(p) -> None:  # a bar per epoch, a line at its end
        nonlocal bar
        if p.phase == "step":
            if bar is None:
                bar = tqdm(
                    total=p.steps,
                    desc=f"epoch {p.epoch}/{p.epochs}",
                    file=sys.stderr,
                    leave=False,
                    disable=None,
                )
            bar.update(1)
            bar.set_postfix(loss=f"{p.loss:.3f}")
            return
        if bar is not None:
            bar.close()
            bar = None
        val = "" if p.val_score is None else f" val DSB {p.val_score:.4f} (best {p.best_score:.4f})"
        print(
            f"epoch {p.epoch}/{p.epochs}: loss {p.loss:.4f}, lr {p.lr:.2e}{val}",
            file=sys.stderr,
            flush=True,
        )

    result = drain(gen, show)
    if before is not None:  # the new model on the kinds its base knew
        after = reference_scores(result.model, result.config, measured, device)
        forgetting = Forgetting(before, after)
        scores = dict(result.config.training.scores, reference_before=before, reference_after=after)
        result.config = replace(
            result.config, training=replace(result.config.training, scores=scores)
        )
        print("reference set, DSB2018 before -> after:", file=sys.stderr)
        for line in forgetting.lines():
            print(f"  {line}", file=sys.stderr)
    if result.checkpoint is not None:  # the final card holds the whole history
        save_checkpoint(result.checkpoint, result.model, result.config)
    print(
        f"best epoch {result.best_epoch}"
        + ("" if result.best_score is None else f", validation DSB2018 {result.best_score:.4f}")
        + f"; checkpoint: {result.checkpoint}"
    )
    return 0
