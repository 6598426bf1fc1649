"""``nucleiseg evaluate PRED TRUTH [--json]``: print the DSB2018 score of predictions.

The pairing of predictions with the truth is :func:`napari_nucleiseg.io.scoring.evaluate_paths`.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys

from ..io.scoring import evaluate_paths
from . import progress


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``evaluate`` sub-command to the ``nucleiseg`` sub-parsers."""
    p = sub.add_parser("evaluate", help="DSB2018 score of predictions against the truth")
    p.add_argument(
        "pred", help="a folder of label images (<id>.tif/.png) or a Kaggle submission CSV"
    )
    p.add_argument("truth", help="a stage-1 root with masks, or a folder of label images")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_evaluate)
    return p


def cmd_evaluate(args: argparse.Namespace) -> int:
    result, missing, extra = evaluate_paths(
        args.pred, args.truth, progress=functools.partial(progress, desc="scoring")
    )
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
