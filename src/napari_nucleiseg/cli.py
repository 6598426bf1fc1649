"""The ``nucleiseg`` command line: thin wrappers over the core functions.

Progress goes to stderr; a bad input ends the command with status 1 and a
one-line reason naming the file.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import __version__
from .errors import FileProblem, NucleisegError
from .io import stage1
from .io.images import LABEL_SUFFIXES, png_header, read_label_image
from .io.rle import labels_from_submission, read_submission
from .metrics import score_dataset


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
        n = len(stage1.resolve_samples(args.root))
    except FileProblem:
        n = 0
    print(
        f"{n} sample(s) checked: {len(errors)} error(s), {len(problems) - len(errors)} warning(s)",
        file=sys.stderr,
    )
    return 1 if (problems if args.strict else errors) else 0


# ---------------------------------------------------------------- evaluate
def _label_files(folder: Path) -> dict[str, Path]:
    files = {
        p.stem: p
        for p in sorted(folder.iterdir())
        if p.is_file() and p.suffix.lower() in LABEL_SUFFIXES
    }
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
    targets = {kind: out / sample_id for kind, sample_id in SAMPLES.items()}
    existing = [t for t in targets.values() if t.exists()]
    if existing:
        raise FileProblem(existing[0], "already exists; nothing was copied")
    try:
        out.mkdir(parents=True, exist_ok=True)
        for kind, target in targets.items():
            shutil.copytree(sample_folder(kind), target)
            print(f"{kind}: {target}")
    except OSError as exc:
        raise FileProblem(
            getattr(exc, "filename", None) or out, f"cannot be written ({exc.strerror or exc})"
        ) from None
    return 0


# ---------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nucleiseg", description="Nucleus segmentation for DSB2018-style data."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check", help="validate a stage-1 root or sample folder")
    p.add_argument("root", help="a stage-1 root (folder of samples) or one sample folder")
    p.add_argument(
        "--strict", action="store_true", help="fail on warnings too (e.g. overlapping masks)"
    )
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("evaluate", help="DSB2018 score of predictions against the truth")
    p.add_argument(
        "pred", help="a folder of label images (<id>.tif/.png) or a Kaggle submission CSV"
    )
    p.add_argument("truth", help="a stage-1 root with masks, or a folder of label images")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("samples", help="copy the shipped sample folders into a folder")
    p.add_argument("-o", "--output", required=True, help="folder to copy the samples into")
    p.set_defaults(func=cmd_samples)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", stage1.OverlapWarning)
            return args.func(args)
    except NucleisegError as exc:
        print(f"nucleiseg {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"nucleiseg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
