"""``nucleiseg predict INPUT... -o OUTDIR``: segment images into instance-label TIFFs."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..errors import FileProblem, NucleisegError
from ..io.atomic import check_writable_folder, file_problem, remove_stale
from ..io.images import image_shape, read_image_file, read_label_image, write_label_tiff
from ..io.inputs import collect_images
from ..io.rle import labels_to_rles, write_submission_rows
from . import add_device, progress


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``predict`` sub-command to the ``nucleiseg`` sub-parsers."""
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
    add_device(p)
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
    return p


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
    for path in written:  # even --overwrite never replaces an input, e.g. with -o INPUT_FOLDER
        if path.exists() and any(_same_file(path, src) for src in sources):
            raise FileProblem(path, "is an input; an output would replace it (choose another -o)")
        if path.is_dir():
            raise FileProblem(path, "is a folder; expected a file name")


def cmd_predict(args: argparse.Namespace) -> int:
    from ..devices import resolve_device
    from ..inference import drain
    from ..models import DEFAULT_MODEL, load_model
    from ..pipeline import segment

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
        raise file_problem(out, exc, "created") from None
    check_writable_folder(out)
    for path in [*targets.values(), *([submission] if submission else [])]:
        remove_stale(path)  # what a killed run left
    todo = [(i, p) for i, p in inputs if i not in done]
    resumed = f" ({len(done)} done by an earlier run)" if done else ""
    print(
        f"segmenting {len(todo)} image(s){resumed} with {args.model or DEFAULT_MODEL} on {device}",
        file=sys.stderr,
    )
    total, rles = 0, {}
    for image_id, path in progress(todo, "predict"):
        image = read_image_file(path)
        _, (labels,) = drain(
            segment(model, config, image, device=device, tile_size=args.tile_size, tta=args.tta)
        )
        write_label_tiff(targets[image_id], labels, overwrite=True)  # clashes checked above
        total += int(labels.max())
        if submission is not None:
            rles[image_id] = labels_to_rles(labels)
    print(f"{total} nuclei in {len(todo)} image(s) -> {out}", file=sys.stderr)
    if submission is not None:
        rows = (
            (i, rles[i] if i in rles else labels_to_rles(read_label_image(t)))
            for i, t in targets.items()
        )
        write_submission_rows(submission, rows)  # only --resume's earlier images are read back
        print(f"submission: {submission}", file=sys.stderr)
    return 0
