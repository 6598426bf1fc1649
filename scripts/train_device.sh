#!/usr/bin/env bash
# One GPU session of issue 13's recipe: six training runs side by side on one GPU machine
# (16 cores, one H200), then the leave-kind-out runs scored on the kinds they never saw.
# The data travel as compact images/ + masks/ roots, one per kind of image:
#   python scripts/pack_training_data.py --stage1 ../shared/data/dsb2018/stage1_train_fixed \
#     --exclude-ids scripts/splits/exclude_ids.txt --paired monuseg=../shared/data/monuseg2018 \
#     --paired-exclude scripts/splits/monuseg_val.txt --jpeg 85 -o .carry/data
#   bash scripts/train_device.sh [MINUTES] [OUT]
# Runs (every one with --time-limit MINUTES; the same commands run on a CPU, slower):
#   ship-cc0   dsb2018-unet fine-tuned on every stage-1 kind, nuclei resized to 20 px
#              (--diameter 20), zoom 0.4-2.5, haematoxylin-eosin stain jitter
#   ship-he    the same start, on the bright-background kinds (stage-1 colour and brightfield)
#              and 24 MoNuSeg tiles, crops in proportion to area (MoNuSeg: CC BY-NC-SA 4.0)
#   lko-*      from scratch without one kind ("colour": the stage-1 H&E-like images; "rare": the
#              sizes of under 12 images each, mostly large faint nuclei), new recipe against
#              the old one (natural scale, zoom 0.6-1.6, no stain jitter)
set -uo pipefail
minutes=${1:-6.5}
out=${2:-${OUT:-runs-device}}
data=.carry/data
runs=$(mktemp -d)
mkdir -p "$out"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
train() { python3 -m napari_nucleiseg.cli train "$@" --device "${DEVICE:-cuda}" --threads 2 --workers 2 \
  --crop-size 192 --weight-decay 1e-4 --gap-weight 5 --overwrite --time-limit "$minutes"; }
kinds() { ls -d "$data"/dsb/* | grep -v -E "$1"; }
# shellcheck source=recipes.sh
source "$(dirname "$0")/recipes.sh"  # $colour, $rare, ${new[@]}, ${old[@]}
# the ship-* runs were made before a fine-tune kept its base's batch-norm statistics, replayed
# the reference set and had an anchor: these options restore what they did
refit=(--learn-norm-stats --replay 0 --anchor 0)
scratch=(--model unet --width 16 --depth 4 --maps body,border,contour --batch-size 16 --lr 1e-3
         --ema 0.998 --epochs 14 --repeats 2 --inverted-repeats 3 --seed 0)
nvidia-smi -L; python3 -c "import torch; print(torch.__version__, torch.cuda.is_available())"
train $(kinds '^$') -o "$runs/ship-cc0.pt" --base-model dsb2018-unet "${new[@]}" "${refit[@]}" \
  --val-ids scripts/splits/val_ids.txt --batch-size 16 --lr 3e-4 --ema 0.995 --epochs 18 \
  --repeats 2 --inverted-repeats 3 --seed 5 > "$runs/ship-cc0.log" 2>&1 &
train "$data/monuseg" "$data"/dsb/*-bright -o "$runs/ship-he.pt" --base-model dsb2018-unet "${refit[@]}" \
  "${new[@]}" --crops-by-area --val-ids scripts/splits/val_ids.txt --batch-size 16 --lr 3e-4 \
  --ema 0.995 --epochs 16 --repeats 8 --seed 6 > "$runs/ship-he.log" 2>&1 &
for held in colour rare; do
  train $(kinds "${!held}") -o "$runs/lko-$held-new.pt" "${scratch[@]}" "${new[@]}" \
    > "$runs/lko-$held-new.log" 2>&1 &
  train $(kinds "${!held}") -o "$runs/lko-$held-old.pt" "${scratch[@]}" "${old[@]}" \
    > "$runs/lko-$held-old.log" 2>&1 &
done
wait
cp "$runs"/ship-*.pt "$out"/
held_root() { ls -d "$data"/dsb/* | grep -E "$1" | paste -sd+; }
for held in colour rare; do
  python3 benchmarks/bench_generalisation.py --device "${DEVICE:-cuda}" --json "$runs/score-$held.json" \
    --model "new=$runs/lko-$held-new.pt" --model "old=$runs/lko-$held-old.pt" \
    --root "$held=$(held_root "${!held}")" > "$runs/score-$held.log" 2>&1 &
done
wait
cat "$runs"/score-*.log
tail -n 4 "$runs"/*.log
tar -czf "$out/logs.tar.gz" -C "$runs" $(cd "$runs" && ls *.log *.json)
