#!/usr/bin/env bash
# The scale-normalised recipe on every stage-1 kind, on a CPU, in stages that resume from the
# last checkpoint: what the leave-kind-out tables of docs/generalisation.md point to (on held-
# out kinds it beat the shipped models' recipe by 0.03-0.06 at equal length). Nuclei resized
# to 20 px (--diameter 20, recorded for inference), zoom 0.4-2.5, stain jitter; never the
# StarDist test ids or the shipped samples (splits/exclude_ids.txt); the best epoch chosen on
# the validation split. Stage 1 is the leave-kind-out runs' length (14 epochs) on both cores;
# later stages resume from the previous one at a lower learning rate, as train_shipped.sh's.
# A later stage starts from BASE (a checkpoint or a shipped model's name; by default the
# previous stage's file in OUT_DIR). Only main outlives a session here, so a recipe longer
# than a session resumes from what was shipped: a BASE of dsb2018-unet re-trains the shipped
# default at the new scale (as its own stages 2 and 3 started from the float16 file shipped).
# Options after BASE go last to nucleiseg train and so replace the recipe's (the retrains of
# docs/generalisation.md: ... 0 dsb2018-unet --diameter 24 --epochs 16 --seed 8).
#   bash scripts/train_scale_recipe.sh STAGE [DATA_ROOT] [OUT_DIR] [MINUTES] [BASE] [OPTION...]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
stage=${1:?stage number (1, 2, ...)}
data=${2:-$here/../../shared/data/dsb2018/stage1_train_fixed}
out=${3:-$here/../runs/scale-recipe}
minutes=${4:-0}
base=${5:-$out/stage$((stage - 1)).pt}
extra=("${@:6}")  # replace the recipe's options (nucleiseg train keeps an option's last value)
mkdir -p "$out"
# shellcheck source=recipes.sh
source "$here/recipes.sh"  # ${new[@]}: the scale-normalised recipe
common=(--exclude-ids "$here/splits/exclude_ids.txt" --val-ids "$here/splits/val_ids.txt"
        --crop-size 192 --batch-size 8 --optimizer adam --weight-decay 1e-4 --channels grey
        --maps body,border,contour "${new[@]}" --threads 2
        --device auto --overwrite)
if [ "$minutes" != 0 ]; then common+=(--time-limit "$minutes"); fi  # 0: no limit
if [ "$stage" = 1 ]; then
  nucleiseg train "$data" -o "$out/stage1.pt" --model unet --width 16 --depth 4 --epochs 14 \
    --lr 1e-3 --seed 0 "${common[@]}" "${extra[@]}" > "$out/stage1.log" 2>&1
else
  # a later stage trains on as train_shipped.sh's did: the whole set, not a fine-tune's
  # defaults (crops a sample, kept statistics, replay, anchor)
  nucleiseg train "$data" -o "$out/stage$stage.pt" --base-model "$base" \
    --epochs 20 --lr 3e-4 --gap-weight 5 --ema 0.995 --seed "$stage" --repeats 1 \
    --learn-norm-stats --replay 0 --anchor 0 "${common[@]}" "${extra[@]}" \
    > "$out/stage$stage.log" 2>&1
fi
tail -n 3 "$out/stage$stage.log"
