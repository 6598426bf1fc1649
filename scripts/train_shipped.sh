#!/usr/bin/env bash
# Train the shipped models from ../shared/data/dsb2018/stage1_train_fixed on a CPU,
# each within an hour on a 2-core machine (both at once, one core each), never on the
# StarDist test ids or the shipped samples. Then `python scripts/ship_models.py`
# copies the best checkpoints into src/napari_nucleiseg/weights/ with their model cards.
#   bash scripts/train_shipped.sh [DATA_ROOT] [OUT_DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
data=${1:-$here/../../shared/data/dsb2018/stage1_train_fixed}
out=${2:-$here/../runs}
mkdir -p "$out"
common=(--exclude-ids "$here/splits/exclude_ids.txt" --val-ids "$here/splits/val_ids.txt"
        --crop-size 192 --batch-size 8 --optimizer adam --lr 1e-3 --weight-decay 1e-4
        --channels grey --maps body,border,contour --threads 1 --seed 0 --device auto --overwrite)
nucleiseg train "$data" -o "$out/linknet.pt" --model linknet --width 32 --epochs 30 "${common[@]}" \
  > "$out/linknet.log" 2>&1 &
nucleiseg train "$data" -o "$out/unet.pt" --model unet --width 16 --depth 4 --epochs 14 "${common[@]}" \
  > "$out/unet.log" 2>&1 &
wait
tail -n 3 "$out/linknet.log" "$out/unet.log"
