"""Choose a checkpoint's post-processing thresholds on validation samples and write the tuned
copy (the weights unchanged): what ``scripts/ship_models.py`` does for the shipped models, for
any run, e.g. a leave-kind-out model tuned on the kinds it saw.

    python scripts/tune_checkpoint.py runs/lko/lko-rare-new.pt runs/lko/lko-rare-new-tuned.pt \\
        --ids scripts/splits/val_ids.txt ROOT...
"""

from __future__ import annotations

import argparse
import warnings
from dataclasses import replace

from napari_nucleiseg.io import OverlapWarning
from napari_nucleiseg.io.paired import sample_id
from napari_nucleiseg.models import load_model, save_checkpoint
from napari_nucleiseg.training import find_samples, read_ids, read_samples
from napari_nucleiseg.training.tune import tune_postprocess


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("output")
    p.add_argument("roots", nargs="+", help="stage-1 or images/ + masks/ roots")
    p.add_argument("--ids", required=True, help="the validation ids (those found in the roots)")
    args = p.parse_args()
    warnings.simplefilter("ignore", OverlapWarning)
    wanted = set(read_ids(args.ids))
    folders = [f for f in find_samples(args.roots) if sample_id(f) in wanted]
    if not folders:
        raise SystemExit(f"none of the ids of {args.ids} is in {', '.join(args.roots)}")
    model, config = load_model(args.checkpoint, device="cpu")
    post, result, default = tune_postprocess(model, config, read_samples(folders), device="cpu")
    scores = dict(config.training.scores, val_dsb_tuned=round(result.score, 4))
    tuned = replace(config, postprocess=post, training=replace(config.training, scores=scores))
    save_checkpoint(args.output, model, tuned)
    print(
        f"{args.checkpoint}: {len(folders)} validation samples, DSB2018 {default:.4f} at its "
        f"thresholds -> {result.score:.4f} at prob {post.prob_threshold}, seed "
        f"{post.seed_threshold}, split {post.split_depth}, min size {post.min_size}, "
        f"min mean prob {post.min_mean_prob}; written to {args.output}"
    )


if __name__ == "__main__":
    main()
