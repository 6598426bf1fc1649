"""Choose post-processing thresholds on kinds never trained on: each leave-kind-out model
(``scripts/leave_kind_out.sh``) is scored on the kind it was trained without, and the
threshold set with the best mean over all of them is written for ``scripts/ship_models.py
--thresholds`` to ship.

    python scripts/held_out_thresholds.py -o runs/held-out-thresholds.json \\
        runs/lko/lko-colour-new-tuned.pt=colour runs/lko/lko-colour-old-tuned.pt=colour \\
        runs/lko/lko-rare-new-tuned.pt=rare runs/lko/lko-rare-old-tuned.pt=rare

A kind is a name of ``scripts/recipes.sh`` (its pattern of the packed kind folders under
``--data``) or a pattern itself. Thresholds chosen on a validation split of the kinds a model
trained on are best for those kinds; on the kinds it never saw, the best set of one held-out
kind did worse on the other than the validation's choice, while what all held-out kinds agree
on carried (docs/generalisation.md).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import warnings
from pathlib import Path

import numpy as np
import torch

from napari_nucleiseg.io import OverlapWarning
from napari_nucleiseg.models import load_model
from napari_nucleiseg.training import find_samples, read_samples
from napari_nucleiseg.training.tune import (
    chosen_thresholds,
    image_maps,
    score_postprocess,
    tune_across,
)

HERE = Path(__file__).parent


def kind_pattern(kind: str) -> str:
    """The folder pattern of a kind named in recipes.sh, or ``kind`` itself."""
    script = f'source "{HERE / "recipes.sh"}"; printf %s "${{{kind}:-}}"'
    named = subprocess.run(["bash", "-c", script], capture_output=True, text=True).stdout
    return named or kind


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cells", nargs="+", metavar="CHECKPOINT=KIND")
    p.add_argument("-o", "--output", required=True, help="JSON of the choice and every cell")
    p.add_argument("--data", default=".carry/data/dsb", help="the packed kind folders")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args()
    warnings.simplefilter("ignore", OverlapWarning)
    if args.threads:
        torch.set_num_threads(args.threads)
    folders = sorted(str(f) for f in Path(args.data).iterdir() if f.is_dir())
    cells, described = [], []
    for cell in args.cells:
        checkpoint, _, kind = cell.rpartition("=")
        pattern = kind_pattern(kind)
        roots = [f for f in folders if re.search(pattern, Path(f).name)]
        if not checkpoint or not roots:
            raise SystemExit(f"{cell}: give CHECKPOINT=KIND, a kind with folders in {args.data}")
        samples = read_samples(find_samples(roots))
        model, config = load_model(checkpoint, device="cpu")
        maps = [image_maps(model, config, s.image, "cpu") for s in samples]
        own = score_postprocess(config, config.postprocess, samples, maps).score
        cells.append((config, samples, maps))
        described.append({"checkpoint": checkpoint, "kind": kind, "n": len(samples),
                          "own": chosen_thresholds(config.postprocess), "own_score": round(own, 4)})  # fmt: skip
        print(f"{checkpoint} on {kind} ({len(samples)} images): {own:.4f} at its own", flush=True)
    chosen, table = tune_across(cells)
    key = tuple(chosen.values())
    for i, cell in enumerate(described):
        best = max(scores[i] for scores in table.values())
        cell.update(chosen_score=round(table[key][i], 4), best=round(best, 4))
    ranked = sorted(table, key=lambda k: -np.mean(table[k]))
    result = {
        "chosen": chosen,
        "mean": round(float(np.mean(table[key])), 4),
        "cells": described,
        "top": [
            {"thresholds": dict(zip(chosen, k)), "scores": [round(x, 4) for x in table[k]]}
            for k in ranked[:10]
        ],  # fmt: skip
    }
    Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
    for cell in described:
        print(f"{cell['checkpoint']} on {cell['kind']}: own {cell['own_score']}, chosen "
              f"{cell['chosen_score']}, best of its own {cell['best']}")  # fmt: skip
    print(f"chosen {chosen}, mean {result['mean']}; written to {args.output}")


if __name__ == "__main__":
    main()
