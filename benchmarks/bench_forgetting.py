"""Fine-tuning on a few curated H&E tiles: what it gains on unseen tiles of that kind and what
it costs on the kinds the base knew, with and without replay of the reference set.

The user's path: ``nucleiseg train --base-model`` (a subprocess) on ``--tiles`` MoNuSeg
tiles of the training split (``--val`` of them validate), once per ``--replay`` share;
then the base and each fine-tune are scored on the MoNuSeg tiles never trained on
(``scripts/splits/monuseg_val.txt``), and the reference set's kinds are read from the
new checkpoints' cards (scored by the command itself, before and after).

    python benchmarks/bench_forgetting.py --replay 0 0.3 --time-limit 10

Without ``--epochs`` and ``--extra`` each run is the command's own fine-tune (the Train
dock's settings).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from napari_nucleiseg.inference import drain
from napari_nucleiseg.io import OverlapWarning
from napari_nucleiseg.io.paired import list_pairs, mask_file
from napari_nucleiseg.metrics import score_dataset
from napari_nucleiseg.models import load_model
from napari_nucleiseg.pipeline import segment
from napari_nucleiseg.training import read_ids, read_samples

REPO = Path(__file__).resolve().parents[1]
MONUSEG = REPO.parent / "shared" / "data" / "monuseg2018"
UNSEEN = REPO / "scripts" / "splits" / "monuseg_val.txt"


def curated_root(folder: Path, n_tiles: int) -> list[str]:
    """``n_tiles`` MoNuSeg training tiles (by name) linked into ``folder`` as an images/ +
    masks/ root; returns their ids."""
    unseen = set(read_ids(UNSEEN))
    chosen = [p for p in list_pairs(MONUSEG) if p.stem not in unseen][:n_tiles]
    for part in ("images", "masks"):
        (folder / part).mkdir(parents=True)
    for image in chosen:
        (folder / "images" / image.name).symlink_to(image)
        mask = mask_file(image)
        (folder / "masks" / mask.name).symlink_to(mask)
    return [p.stem for p in chosen]


def unseen_score(checkpoint: str) -> tuple[float, float]:
    """DSB2018 and AP@0.5 on the MoNuSeg tiles never trained on (diameter auto, as predict)."""
    model, config = load_model(checkpoint, device="cpu")
    unseen = set(read_ids(UNSEEN))
    samples = read_samples([p for p in list_pairs(MONUSEG) if p.stem in unseen])
    pairs = []
    for s in samples:
        _, (labels,) = drain(segment(model, config, s.image, device="cpu", diameter="auto"))
        pairs.append((s.id, s.labels, labels))
    result = score_dataset(pairs).as_dict()
    return result["score"], result["ap"]["0.50"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="dsb2018-unet")
    p.add_argument("--replay", type=float, nargs="+", default=[0.0, 0.3])
    p.add_argument("--tiles", type=int, default=10)
    p.add_argument("--val", type=int, default=2)
    p.add_argument("--epochs", type=int, help="(default: a fine-tune's, as the command runs it)")
    p.add_argument("--time-limit", type=float, default=10.0, help="minutes of training")
    p.add_argument("--extra", default="", help="more options for nucleiseg train")
    args = p.parse_args()
    warnings.simplefilter("ignore", OverlapWarning)
    if not MONUSEG.is_dir():
        raise SystemExit(f"MoNuSeg is not at {MONUSEG}")
    base_dsb, base_ap = unseen_score(args.base)
    rows = [f"| {args.base} (base) | – | – | {base_dsb:.4f} | {base_ap:.4f} | – |"]
    kinds: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "curated"
        ids = curated_root(root, args.tiles)
        (Path(tmp) / "val.txt").write_text("\n".join(ids[: args.val]) + "\n")
        for share in args.replay:
            out = Path(tmp) / f"tuned-{share}.pt"
            command = [
                sys.executable, "-m", "napari_nucleiseg.cli", "train", str(root), "-o", str(out),
                "--base-model", args.base, "--replay", str(share),
                *(["--epochs", str(args.epochs)] if args.epochs else []),
                "--val-ids", str(Path(tmp) / "val.txt"), "--time-limit", str(args.time_limit),
                "--device", "cpu", *args.extra.split(),
            ]  # fmt: skip
            start = time.perf_counter()
            run = subprocess.run(command, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if run.returncode != 0:
                raise SystemExit(f"replay {share} failed:\n{run.stderr[-3000:]}")
            _, config = load_model(out)
            scores = config.training.scores
            dsb, ap = unseen_score(str(out))
            before, after = scores["reference_before"], scores["reference_after"]
            worst = min(after[k] - before[k] for k in before)
            kinds[f"replay {share}"] = after
            kinds["base"] = before
            rows.append(
                f"| replay {share} | {seconds / 60:.1f} | {scores.get('val_dsb', float('nan')):.4f} "
                f"| {dsb:.4f} ({dsb - base_dsb:+.4f}) | {ap:.4f} | {worst:+.4f} |"
            )
    print(f"\n## Fine-tuning {args.base} on {args.tiles} MoNuSeg tiles ({args.val} validate)\n")
    print(
        "| run | minutes (with scoring) | val DSB (curated) | unseen MoNuSeg DSB | AP@0.5 | "
        "worst reference kind, after - before |"
    )
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    names = list(kinds)
    print("\nReference set, DSB2018 by kind:\n")
    print("| kind | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for kind in sorted(kinds["base"]):
        print(f"| {kind} | " + " | ".join(f"{kinds[n][kind]:.3f}" for n in names) + " |")
    print("\nmean over kinds: " + ", ".join(
        f"{n} {np.mean(list(kinds[n].values())):.4f}" for n in names
    ))  # fmt: skip


if __name__ == "__main__":
    main()
