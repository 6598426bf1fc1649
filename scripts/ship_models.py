"""Make trained checkpoints the shipped models: tuned thresholds, float16 weights, a model card.

    python scripts/ship_models.py runs/linknet.pt:dsb2018-linknet runs/unet-stage5.pt:dsb2018-unet
    python scripts/ship_models.py --dry-run runs/candidate.pt:candidate   # scores only
    python scripts/ship_models.py --thresholds runs/held/held-out-thresholds.json \
        src/napari_nucleiseg/weights/dsb2018-unet.pt:dsb2018-unet

For each: the post-processing thresholds are chosen on the validation split
(``splits/val_ids.txt``, never on the StarDist test ids), or taken from
``--thresholds``, the choice of ``scripts/held_out_thresholds.py`` on kinds that
leave-kind-out models never saw; the weights are
stored as float16 in ``src/napari_nucleiseg/weights/<name>.pt``; the scores on
the validation split (by kind of image) and on the StarDist paper's 50 test
images go into the checkpoint's training info and into ``<name>.md``.
"""

from __future__ import annotations

import argparse
import json
import re
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import torch

from napari_nucleiseg.models import load_model, save_checkpoint
from napari_nucleiseg.models.checkpoint import WEIGHTS_DIR
from napari_nucleiseg.training import evaluate, read_ids, read_samples
from napari_nucleiseg.training.tune import image_maps, score_postprocess, tune_postprocess

HERE = Path(__file__).parent
DATA = HERE.parents[1] / "shared" / "data" / "dsb2018"
REPORTED = (0.5, 0.6, 0.7, 0.8, 0.9)


def kinds() -> dict[str, str]:
    """Validation id -> kind, from the comments in val_ids.txt."""
    out = {}
    for line in (HERE / "splits" / "val_ids.txt").read_text().splitlines():
        if "#" in line and line.split("#")[0].strip():
            out[line.split("#")[0].strip()] = line.split("#")[1].strip()
    return out


def ap_at(result, pooled: bool = False) -> dict[str, float]:
    values = result.ap_pooled if pooled else result.ap
    return {f"{t:.1f}": round(float(values[result.thresholds.index(t)]), 4) for t in REPORTED}


def ship(run: Path, name: str, write: bool = True, held_out: Path | None = None) -> dict:
    model, config = load_model(run, device="cpu")
    val = read_samples(
        [DATA / "stage1_train_fixed" / i for i in read_ids(HERE / "splits" / "val_ids.txt")]
    )
    if held_out is None:
        post, val_result, default = tune_postprocess(model, config, val)
        chosen_on = "the validation split"
    else:  # chosen elsewhere: the validation split only reports them
        post = config.postprocess.chosen(json.loads(held_out.read_text())["chosen"])
        maps = [image_maps(model, config, s.image) for s in val]
        default = score_postprocess(config, config.postprocess, val, maps).score
        val_result = score_postprocess(config, post, val, maps)
        chosen_on = (
            f"kinds never trained on (`scripts/held_out_thresholds.py`, {held_out.name}: "
            "leave-kind-out models on the kind each never saw)"
        )
    config = replace(config, postprocess=post)
    by_kind_ids = kinds()
    per_image = dict(zip(val_result.ids, val_result.images))
    by_kind = {}
    for kind in sorted(set(by_kind_ids.values())):
        imgs = [(i, s) for i, s in per_image.items() if by_kind_ids.get(i) == kind]
        by_kind[kind] = {"n": len(imgs), "dsb": round(sum(s.score for _, s in imgs) / len(imgs), 4)}
    test_ids = read_ids(DATA / "splits" / "stardist_test_ids.txt")
    leaked = set(test_ids) - set(config.training.exclude_ids)
    if leaked:
        raise SystemExit(f"{run}: {len(leaked)} StarDist test ids were not excluded from training")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        test = read_samples([DATA / "stage1_train" / i for i in test_ids])
    test_result = evaluate(model, config, test)
    scores = dict(config.training.scores)
    scores.pop("history", None)
    scores.update(
        thresholds_chosen_on=chosen_on,
        val_dsb=round(val_result.score, 4),
        val_dsb_default_thresholds=round(default, 4),
        val_by_kind=by_kind,
        stardist_test_dsb=round(test_result.score, 4),
        stardist_test_ap=ap_at(test_result),
        stardist_test_ap_pooled=ap_at(test_result, True),
    )
    history = (
        config.training.scores.get("history")
        or history_from_log(run.with_suffix(".log"))
        or history_from_card(run.with_suffix(".md"))  # re-shipping a shipped model
    )
    config = replace(config, training=replace(config.training, scores=scores))
    if not write:  # a candidate scored exactly as it would be shipped
        return {**scores, "thresholds": asdict(post)}
    WEIGHTS_DIR.mkdir(exist_ok=True)
    target = save_checkpoint(WEIGHTS_DIR / f"{name}.pt", model, config, half=True)
    write_card(name, config, scores, history, target)
    return scores


def _epoch_rows(path: Path, pattern: str) -> list[dict]:
    """Epoch, loss and validation score from the lines of a file that match ``pattern``."""
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        m = re.match(pattern, line)
        if m:
            val = None if m[3] in (None, "-") else float(m[3])
            rows.append(
                {"epoch": int(m[1]), "loss": float(m[2]), "val_score": val, "seconds": None}
            )
    return rows


def history_from_log(log: Path) -> list[dict]:
    """Epoch lines of a `nucleiseg train` log, for checkpoints saved without their history."""
    return _epoch_rows(log, r"epoch (\d+)/\d+: loss ([\d.]+), lr \S+(?: val DSB ([\d.]+))?")


def history_from_card(card: Path) -> list[dict]:
    """The training-history table of a model card, for re-shipping a shipped checkpoint."""
    return _epoch_rows(card, r"\| (\d+) \| ([\d.]+) \| ([\d.]+|-) \|$")


def stage(record: dict, prefix: str = "") -> str:
    """One training run of a record (``asdict(TrainingInfo)`` or its ``base``), in words."""
    s = record["settings"]
    extras = []
    if s.get("inverted_repeats", 1) > 1:
        extras.append(f"bright-background samples x{s['inverted_repeats']}")
    if s.get("gap_weight"):
        extras.append(f"gap weight {s['gap_weight']}")
    if s.get("ema_decay"):
        extras.append(f"moving average of the weights (decay {s['ema_decay']}) validated and kept")
    extra = "".join(f", {e}" for e in extras)
    return (
        f"{prefix}{record['epochs']} epochs (best: {record['scores'].get('best_epoch')}), "
        f"{s.get('optimizer')} lr {s.get('lr')}, weight decay {s.get('weight_decay')}, batch "
        f"{s.get('batch_size')} of {s.get('crop_size')}-pixel crops{extra}, seed {s.get('seed')}"
    )


def stage_label(k: int, n: int) -> str:
    if n == 1:
        return ""
    return "stage 1: " if k == 1 else f"stage {k}, from those weights: "


def write_card(name, config, scores, history, target) -> None:
    t = config.training
    runs = t.runs()
    n_params = sum(p.numel() for p in config.build().parameters())
    lines = [
        f"# {name}",
        "",
        f"{config.architecture} {json.dumps(config.arch_kwargs)}, {n_params / 1e6:.2f} M parameters, "
        f"input {config.normalization.channels} ({config.normalization.channels} channel(s), "
        f"percentiles {config.normalization.low}/{config.normalization.high}, "
        f"inverted when the background is bright), outputs {', '.join(config.maps)}.",
        f"File: `{target.name}`, {target.stat().st_size / 1e6:.1f} MB (float16 weights).",
        "",
        "## Training",
        f"- Data: {', '.join(Path(r).name for r in t.data_roots)} (DSB2018 stage 1, community-corrected masks).",
        f"- Never trained on: {len(t.exclude_ids)} ids (`scripts/splits/exclude_ids.txt`: the StarDist "
        "paper's 50 test ids and the shipped samples); validation: "
        f"{len(t.val_ids)} ids (`scripts/splits/val_ids.txt`, every kind of image).",
        "- Recipe: `bash scripts/train_shipped.sh`, then `python scripts/ship_models.py`; "
        + "; ".join(stage(run, stage_label(k, len(runs))) for k, run in enumerate(runs, 1))
        + "; BCE + Dice loss, joint augmentation (flips, rotations, shear, zoom, intensity and "
        "stain jitter).",
        *(f"- Stage {k} started from: {run['source']}." for k, run in enumerate(runs[:-1], 2)),
        f"- Machine: {t.machine}.",
        f"- Post-processing thresholds chosen on "
        f"{scores.get('thresholds_chosen_on', 'the validation split')}: probability "
        f"{config.postprocess.prob_threshold}, seed {config.postprocess.seed_threshold}, "
        f"minimum size {config.postprocess.min_size} px, minimum mean probability "
        f"{config.postprocess.min_mean_prob or 'off'}, shape split "
        f"{config.postprocess.split_depth or 'off'}"
        f"{' px' if config.postprocess.split_depth else ''}.",
        "",
        "## Scores",
        f"- Validation DSB2018 score: {scores['val_dsb']} (with the thresholds it had before "
        f"{scores['val_dsb_default_thresholds']}); by kind: "
        + ", ".join(f"{k} {v['dsb']} (n={v['n']})" for k, v in scores["val_by_kind"].items())
        + ".",
        f"- StarDist paper test split (50 images, original masks): DSB2018 score "
        f"{scores['stardist_test_dsb']}.",
        "",
        "| AP at IoU | " + " | ".join(scores["stardist_test_ap"]) + " |",
        "| --- | " + " | ".join("---" for _ in scores["stardist_test_ap"]) + " |",
        "| mean over images | "
        + " | ".join(str(v) for v in scores["stardist_test_ap"].values())
        + " |",
        "| pooled over images | "
        + " | ".join(str(v) for v in scores["stardist_test_ap_pooled"].values())
        + " |",
        "| StarDist (paper) | 0.864 | 0.804 | 0.685 | 0.450 | 0.119 |",
        "| U-Net, 3 classes (paper) | 0.806 | 0.743 | 0.654 | 0.491 | 0.226 |",
        "",
    ]
    if history:
        lines += [
            "## Training history" + (f" (stage {len(runs)})" if t.base else ""),
            "",
            "| epoch | loss | validation DSB |",
            "| --- | --- | --- |",
        ]
        lines += [
            f"| {h['epoch']} | {h['loss']:.4f} | "
            f"{'-' if h['val_score'] is None else round(h['val_score'], 4)} |"
            for h in history
        ]
    (WEIGHTS_DIR / f"{name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", metavar="CHECKPOINT:NAME")
    p.add_argument("--dry-run", action="store_true", help="score only, write nothing")
    p.add_argument("--thresholds", type=Path, help="held_out_thresholds.py's choice to ship")
    args = p.parse_args()
    for arg in args.runs:
        run, name = arg.rsplit(":", 1)
        scores = ship(Path(run), name, not args.dry_run, args.thresholds)
        print(name, json.dumps(scores, indent=1))
