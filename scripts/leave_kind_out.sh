#!/usr/bin/env bash
# Leave-kind-out on a CPU: train a U-Net from scratch on every stage-1 kind but one, with the
# scale-normalised recipe (nuclei resized to 20 px, zoom 0.4-2.5, stain jitter) and with the
# recipe of the shipped models (natural scale, zoom 0.6-1.6, no stain jitter), one core each,
# both at the length of the shipped U-Net's first stage (14 epochs; scripts/train_shipped.sh);
# then choose each one's thresholds on the validation images of the kinds it saw
# (scripts/tune_checkpoint.py, as the shipped models' were chosen) and score both on the kind
# they never saw and on H&E of another lab, beside the shipped dsb2018-unet (which trained on
# every kind, so its row on the held-out kind is the seen-kind reference, not a held-out
# figure).
# The data are the packed kind folders (scripts/pack_training_data.py, see
# scripts/train_device.sh); validation ids of the held-out kind are absent from training, so
# the best epoch is chosen on the kinds seen.
#   bash scripts/leave_kind_out.sh [rare|colour] [OUT] [MINUTES]
set -euo pipefail
held=${1:-rare}
out=${2:-runs/lko}
minutes=${3:-90}
data=${DATA:-.carry/data/dsb}
# shellcheck source=recipes.sh
source "$(dirname "$0")/recipes.sh"  # $colour, $rare, ${new[@]}, ${old[@]}
case "$held" in
  colour|rare) pattern=${!held} ;;
  *) echo "unknown kind $held (rare or colour)" >&2; exit 2 ;;
esac
mkdir -p "$out"
seen=$(ls -d "$data"/* | grep -v -E "$pattern")
unseen=$(ls -d "$data"/* | grep -E "$pattern" | paste -sd+)
common=(--model unet --width 16 --depth 4 --epochs 14 --crop-size 192 --batch-size 8
        --optimizer adam --lr 1e-3 --weight-decay 1e-4 --channels grey --maps body,border,contour
        --val-ids scripts/splits/val_ids.txt --threads 1 --seed 0 --device cpu --overwrite
        --time-limit "$minutes")
nucleiseg train $seen -o "$out/lko-$held-new.pt" "${common[@]}" "${new[@]}" \
  > "$out/lko-$held-new.log" 2>&1 &
new_pid=$!
nucleiseg train $seen -o "$out/lko-$held-old.pt" "${common[@]}" "${old[@]}" \
  > "$out/lko-$held-old.log" 2>&1 &
old_pid=$!
wait "$new_pid"
wait "$old_pid"
for recipe in new old; do
  python scripts/tune_checkpoint.py "$out/lko-$held-$recipe.pt" "$out/lko-$held-$recipe-tuned.pt" \
    --ids scripts/splits/val_ids.txt $seen &
done
wait
models=(--model "new=$out/lko-$held-new-tuned.pt" --model "old=$out/lko-$held-old-tuned.pt"
        --model dsb2018-unet)
python benchmarks/bench_generalisation.py --device cpu --json "$out/score-$held.json" \
  "${models[@]}" --root "$held=$unseen" | tee "$out/score-$held.log"
# H&E of another lab (MoNuSeg's 6 tiles never trained on): a kind none of the three trained on
python benchmarks/bench_generalisation.py --device cpu --json "$out/score-$held-monuseg.json" \
  "${models[@]}" --root "monuseg-unseen=${MONUSEG:-../shared/data/monuseg2018}" \
  --ids scripts/splits/monuseg_val.txt | tee "$out/score-$held-monuseg.log"
