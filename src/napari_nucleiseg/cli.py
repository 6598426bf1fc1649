"""The ``nucleiseg`` command line: thin wrappers over the core functions.

Progress goes to stderr; a bad input ends the command with status 1 and a
one-line reason naming the file.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import signal
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from . import __version__
from ._cli_export import add_export_parser
from .devices import DEVICES
from .errors import FileProblem, NucleisegError
from .io import stage1
from .io.atomic import check_writable_folder, remove_stale
from .io.images import (
    LABEL_SUFFIXES,
    image_files,
    image_shape,
    png_header,
    read_image_file,
    read_label_image,
    write_label_tiff,
)
from .io.inputs import collect_images
from .io.rle import labels_from_submission, read_submission, write_submission
from .metrics import score_dataset

if TYPE_CHECKING:  # the models import torch: the command line loads them only when it needs them
    from .models import ModelConfig, TrainingInfo

#: what ``nucleiseg train`` builds where an option is not given (a fine-tune keeps its base's)
NEW_NETWORK = {"model": "unet", "depth": 4, "channels": "grey", "maps": "body,border,contour"}
#: ``--width`` when not given, by architecture
NEW_WIDTH = {"unet": 16, "linknet": 32}
#: what ``--maps`` takes: the border map, or the border and contour maps, separate touching nuclei
MAP_CHOICES = ("body,border", "body,border,contour")


def _progress(items, desc: str):
    return tqdm(
        items, desc=desc, unit="image", file=sys.stderr, leave=False, disable=None
    )  # disable=None: no bar when stderr is not a terminal


# ---------------------------------------------------------------- check
def cmd_check(args: argparse.Namespace) -> int:
    problems = stage1.check(args.root)
    errors = [p for p in problems if p.severity == "error"]
    for p in problems:
        print(p)
    try:
        n = len(stage1.folders_to_check(args.root))
    except FileProblem:
        n = 0
    print(
        f"{n} sample(s) checked: {len(errors)} error(s), {len(problems) - len(errors)} warning(s)",
        file=sys.stderr,
    )
    return 1 if (problems if args.strict else errors) else 0


# ---------------------------------------------------------------- evaluate
def _label_files(folder: Path) -> dict[str, Path]:
    files = {p.stem: p for p in image_files(folder, LABEL_SUFFIXES)}
    if not files:
        raise FileProblem(folder, f"holds no label image ({', '.join(LABEL_SUFFIXES)})")
    return files


def _truth(path: Path) -> tuple[dict[str, tuple[int, int]], Iterator[tuple[str, np.ndarray]]]:
    """Shapes of the truth images, and a lazy iterator over (id, labels)."""
    if not path.exists():
        raise FileProblem(path, "does not exist")
    if stage1.is_sample_folder(path) or stage1.is_stage1_root(path):
        folders = stage1.resolve_samples(path)
        for f in folders:
            if stage1.mask_paths(f) is None:
                raise FileProblem(f / stage1.MASKS, "does not exist: the truth needs masks")
        shapes = {f.name: png_header(stage1.image_path(f))[1] for f in folders}

        def read() -> Iterator[tuple[str, np.ndarray]]:
            for f in folders:
                yield f.name, stage1.read_sample(f).labels

        return shapes, read()
    if not path.is_dir():
        raise FileProblem(path, "is neither a stage-1 folder nor a folder of label images")
    files = _label_files(path)
    labels = {i: read_label_image(p) for i, p in files.items()}
    return {i: a.shape for i, a in labels.items()}, iter(labels.items())


def evaluate_paths(pred: str | Path, truth: str | Path):
    """Score predictions (label folder or submission CSV) against the truth; see ``evaluate``."""
    pred, truth = Path(pred), Path(truth)
    shapes, truth_items = _truth(truth)
    if pred.is_file() and pred.suffix.lower() == ".csv":
        rows = read_submission(pred)
        predicted = labels_from_submission(rows, shapes, source=pred)
        extra = sorted(set(rows) - set(shapes))

        def predicted_labels(image_id):
            return predicted.get(image_id)
    else:
        if not pred.exists():
            raise FileProblem(pred, "does not exist")
        if not pred.is_dir():
            raise FileProblem(pred, "is neither a submission CSV nor a folder of label images")
        files = _label_files(pred)
        extra = sorted(set(files) - set(shapes))

        def predicted_labels(image_id):
            return read_label_image(files[image_id]) if image_id in files else None

    missing: list[str] = []

    def triples():
        for image_id, labels in _progress(truth_items, "scoring"):
            p = predicted_labels(image_id)
            if p is None:
                missing.append(image_id)
            elif p.shape != labels.shape:
                raise FileProblem(
                    pred,
                    f"prediction for {image_id} is {p.shape[0]}x{p.shape[1]}, "
                    f"its truth is {labels.shape[0]}x{labels.shape[1]}",
                )
            yield image_id, labels, p

    result = score_dataset(triples())
    return result, missing, extra


def cmd_evaluate(args: argparse.Namespace) -> int:
    result, missing, extra = evaluate_paths(args.pred, args.truth)
    if missing:
        print(
            f"warning: {len(missing)} image(s) have no prediction and score 0: "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}",
            file=sys.stderr,
        )
    if extra:
        print(
            f"warning: {len(extra)} prediction(s) have no truth and are ignored: "
            f"{', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}",
            file=sys.stderr,
        )
    summary = result.as_dict()
    summary["missing"], summary["extra"] = missing, extra
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"DSB2018 score: {result.score:.4f} over {len(result.images)} image(s)")
    print(f"{'IoU >':>6} {'AP':>7} {'AP pooled':>10} {'TP':>7} {'FP':>7} {'FN':>7}")
    tp, fp, fn = result.counts
    for k, t in enumerate(result.thresholds):
        print(
            f"{t:>6.2f} {result.ap[k]:>7.4f} {result.ap_pooled[k]:>10.4f} "
            f"{tp[k]:>7d} {fp[k]:>7d} {fn[k]:>7d}"
        )
    return 0


# ---------------------------------------------------------------- samples
def cmd_samples(args: argparse.Namespace) -> int:
    from .samples import SAMPLES, sample_folder

    out = Path(args.output)
    copies = {kind: (sample_folder(kind), out / sample_id) for kind, sample_id in SAMPLES.items()}
    for source, target in copies.values():
        if target.resolve() == source.resolve():  # --overwrite would delete the source
            raise FileProblem(target, "is the shipped sample itself; choose another folder")
    existing = [t for _, t in copies.values() if t.exists() or t.is_symlink()]
    if existing and not args.overwrite:
        raise FileProblem(
            existing[0], "already exists; nothing was copied (pass --overwrite to replace it)"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        for kind, (source, target) in copies.items():
            if target in existing:  # only the shipped samples' folders; the rest of DIR stays
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                else:
                    target.unlink()
            shutil.copytree(source, target)
            print(f"{kind}: {target}")
    except OSError as exc:
        raise FileProblem(
            getattr(exc, "filename", None) or out, f"cannot be written ({exc.strerror or exc})"
        ) from None
    return 0


# ---------------------------------------------------------------- predict
def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)  # one file under two names: a hard link, a symlink
    except OSError:
        return False


def _check_outputs(inputs: list[tuple[str, Path]], out: Path, written: list[Path]) -> None:
    """Refuse, before any image runs, outputs that would replace an input or cannot be made."""
    if out.exists() and not out.is_dir():
        raise FileProblem(out, "is a file; -o takes a folder")
    sources = [path for _, path in inputs]
    resolved = {path.resolve() for path in sources}
    for path in written:  # even --overwrite never replaces an input, e.g. with -o INPUT_FOLDER
        same = path.resolve() in resolved or (
            path.exists() and any(_same_file(path, src) for src in sources)
        )
        if same:
            raise FileProblem(path, "is an input; an output would replace it (choose another -o)")
        if path.is_dir():
            raise FileProblem(path, "is a folder; expected a file name")


def cmd_predict(args: argparse.Namespace) -> int:
    from .devices import resolve_device
    from .inference import drain
    from .models import DEFAULT_MODEL, load_model
    from .pipeline import segment

    inputs = collect_images(args.inputs)
    for _, path in inputs:  # a bad input is refused before the first image runs
        image_shape(path)
    out = Path(args.output)
    targets = {image_id: out / f"{image_id}.tif" for image_id, _ in inputs}
    submission = Path(args.submission) if args.submission else None
    _check_outputs(inputs, out, [*targets.values(), *([submission] if submission else [])])
    if submission is not None:
        check_writable_folder(submission.parent)
    done = {i for i, t in targets.items() if t.is_file()} if args.resume else set()
    clash = [t for i, t in targets.items() if t.exists() and i not in done]
    if submission is not None and submission.exists() and not args.resume:
        clash.append(submission)  # --resume rebuilds the submission from every label image
    if clash and not args.overwrite:
        raise FileProblem(
            clash[0],
            "already exists; nothing was written (pass --overwrite to replace, "
            "or --resume to keep the complete outputs of an earlier run)",
        )
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        raise NucleisegError(str(exc)) from None
    model, config = load_model(args.model or DEFAULT_MODEL, device=device)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FileProblem(out, f"cannot be created ({exc.strerror or exc})") from None
    check_writable_folder(out)
    for path in [*targets.values(), *([submission] if submission else [])]:
        remove_stale(path)  # what a killed run left
    todo = [(i, p) for i, p in inputs if i not in done]
    resumed = f" ({len(done)} done by an earlier run)" if done else ""
    print(
        f"segmenting {len(todo)} image(s){resumed} with {args.model or DEFAULT_MODEL} on {device}",
        file=sys.stderr,
    )
    total = 0
    for image_id, path in _progress(todo, "predict"):
        image = read_image_file(path)
        _, (labels,) = drain(
            segment(model, config, image, device=device, tile_size=args.tile_size, tta=args.tta)
        )
        write_label_tiff(targets[image_id], labels, overwrite=True)  # clashes checked above
        total += int(labels.max())
    print(f"{total} nuclei in {len(todo)} image(s) -> {out}", file=sys.stderr)
    if submission is not None:
        write_submission(submission, ((i, read_label_image(targets[i])) for i, _ in inputs))
        print(f"submission: {submission}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- train
def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _new_network(args: argparse.Namespace, info: TrainingInfo) -> ModelConfig:
    """The config of a network trained from scratch: the options given, else ``NEW_NETWORK``."""
    from .models import ModelConfig
    from .preprocess import NormalizeConfig

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
    from .models.registry import default_arguments

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

    from .devices import resolve_device
    from .finetune import finetune_config
    from .inference import drain
    from .models import load_model, resolve_checkpoint, save_checkpoint
    from .models.checkpoint import TrainingInfo
    from .training import TrainConfig, find_samples, read_ids, read_samples, split_samples, train

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
    if args.base_model:  # what the base never saw, its fine-tune never sees
        exclude = finetune_config(base, args.data, args.base_model, exclude).training.exclude_ids
    val_ids = read_ids(args.val_ids) if args.val_ids else []
    folders = find_samples(args.data, exclude_ids=set(exclude))
    print(f"reading {len(folders)} samples ...", file=sys.stderr)
    train_samples, val_samples = split_samples(read_samples(folders), val_ids)
    if not train_samples:
        raise FileProblem(args.data[0], "leaves no training sample after the exclusions")
    if args.base_model:  # the base's network, a new record that names where it started
        config = finetune_config(base, args.data, args.base_model, exclude)
    else:
        info = TrainingInfo(
            data_roots=[str(Path(d).resolve()) for d in args.data], exclude_ids=sorted(exclude)
        )
        model, config = None, _new_network(args, info)
    settings = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        crop_size=args.crop_size,
        repeats=args.repeats,
        inverted_repeats=args.inverted_repeats,
        max_steps=args.steps_per_epoch,
        optimizer=args.optimizer,
        lr=args.lr,
        weight_decay=args.weight_decay,
        gap_weight=args.gap_weight,
        ema_decay=args.ema,
        seed=args.seed,
        num_workers=args.workers,
    )
    device = resolve_device(args.device)
    print(
        f"training {config.architecture} on {len(train_samples)} samples "
        f"({len(val_samples)} for validation) on {device}",
        file=sys.stderr,
    )
    gen = train(
        config, train_samples, val_samples, settings, model=model, checkpoint=out, device=device
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
    if result.checkpoint is not None:  # the final card holds the whole history
        save_checkpoint(result.checkpoint, result.model, result.config)
    print(
        f"best epoch {result.best_epoch}"
        + ("" if result.best_score is None else f", validation DSB2018 {result.best_score:.4f}")
        + f"; checkpoint: {result.checkpoint}"
    )
    return 0


# ---------------------------------------------------------------- main
class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default in ``--help``, but not "None" nor a flag's "False"."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action)


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        default="auto",
        choices=DEVICES,
        help="where the network runs; auto: CUDA, then Apple MPS, then CPU",
    )


def build_parser() -> argparse.ArgumentParser:
    parser_class = functools.partial(argparse.ArgumentParser, formatter_class=_HelpFormatter)
    parser = parser_class(
        prog="nucleiseg", description="Nucleus segmentation for DSB2018-style data."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=parser_class)

    p = sub.add_parser("check", help="validate a stage-1 root or sample folder")
    p.add_argument("root", help="a stage-1 root (folder of samples) or one sample folder")
    p.add_argument(
        "--strict",
        action="store_true",
        help="fail on warnings too (e.g. overlapping masks, an empty masks/ folder)",
    )
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("evaluate", help="DSB2018 score of predictions against the truth")
    p.add_argument(
        "pred", help="a folder of label images (<id>.tif/.png) or a Kaggle submission CSV"
    )
    p.add_argument("truth", help="a stage-1 root with masks, or a folder of label images")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_evaluate)

    add_export_parser(sub)

    p = sub.add_parser("samples", help="copy the shipped sample folders into a folder")
    p.add_argument("-o", "--output", required=True, help="folder to copy the samples into")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the shipped samples' folders in OUTPUT (nothing else in it)",
    )
    p.set_defaults(func=cmd_samples)

    p = sub.add_parser("predict", help="segment images into instance-label TIFFs")
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files (PNG, TIFF, JPEG), folders of image files, stage-1 sample folders "
        "or roots",
    )
    p.add_argument("-o", "--output", required=True, help="folder for <id>.tif label images")
    p.add_argument(
        "--model", help="shipped model name or checkpoint path (default: the best shipped)"
    )
    _add_device(p)
    p.add_argument("--submission", help="also write a Kaggle DSB2018 submission CSV")
    p.add_argument(
        "--tta",
        action="store_true",
        help="average the network over 4 flips (2.5x the time on a CPU)",
    )
    p.add_argument("--tile-size", type=int, help="tile side in pixels (default: automatic)")
    again = p.add_mutually_exclusive_group()
    again.add_argument(
        "--overwrite", action="store_true", help="replace existing outputs (never an input)"
    )
    again.add_argument(
        "--resume",
        action="store_true",
        help="skip the inputs whose label image exists (an interrupted run goes on)",
    )
    p.set_defaults(func=cmd_predict)

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
    p.add_argument("--epochs", type=int, default=30, help="passes over the training samples")
    p.add_argument(
        "--steps-per-epoch", type=int, help="cap on optimiser steps per epoch (default: none)"
    )
    p.add_argument("--batch-size", type=int, default=8, help="crops per optimiser step")
    p.add_argument("--crop-size", type=int, default=256, help="side of a training crop in pixels")
    p.add_argument("--repeats", type=_positive, default=1, help="crops per sample per epoch")
    p.add_argument(
        "--inverted-repeats",
        type=_positive,
        default=1,
        help="times more crops of bright-background (brightfield, H&E) samples",
    )
    p.add_argument(
        "--optimizer", choices=["sgd", "rmsprop", "adam"], default="adam", help="optimiser"
    )
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate")
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
    p.add_argument("--exclude-ids", help="file of ids never to train on")
    p.add_argument("--val-ids", help="file of ids to validate on (DSB2018 score each epoch)")
    _add_device(p)
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the weights, crops and augmentation"
    )
    p.add_argument("--workers", type=int, default=0, help="data-loading processes")
    p.add_argument("--threads", type=int, help="CPU threads for PyTorch (default: PyTorch's)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint")
    p.set_defaults(func=cmd_train)
    return parser


def _interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up as Ctrl+C does: no partial file stays


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", stage1.OverlapWarning)
            return args.func(args)
    except NucleisegError as exc:
        print(f"nucleiseg {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. piped into `head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"nucleiseg {args.command}: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """The ``nucleiseg`` command: :func:`main`, with SIGTERM handled as Ctrl+C."""
    signal.signal(signal.SIGTERM, _interrupt)
    sys.exit(main())


if __name__ == "__main__":
    run()
