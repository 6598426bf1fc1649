#!/usr/bin/env bash
# Train the shipped models from ../shared/data/dsb2018/stage1_train_fixed on a CPU, never on
# the StarDist test ids or the shipped samples. Stage 1 trains both models within an hour on
# a 2-core machine (both at once, one core each); stage 1's U-Net is already a complete
# model (validation DSB2018 0.487). Stage 2 trains the U-Net on, at a lower learning rate,
# for 20 more epochs (64 min on one core beside another run; on both cores alone one epoch
# measured 129 s, so about 45 min), which lifts validation to 0.505. Stage 3 trains it 20
# more epochs with the loss weighted 6x on the gaps between touching nuclei (--gap-weight 5;
# about 2 min an epoch on both cores, 45 min), which lifts validation to 0.512 at stage 2's
# thresholds (0.524 with the thresholds and shape split tuned for it). Stage 4 trains it 34
# more epochs on a fresh cosine cycle, validating and keeping a moving average of the weights
# (--ema 0.995; about 85 s an epoch on both cores, 50 min), which lifts validation to 0.530 at
# stage 2's thresholds (0.537 tuned). Stage 5 is one more such cycle of 28 epochs (40 min),
# best at epoch 8: validation 0.535 at stage 2's thresholds, 0.543 tuned. Then
#   python scripts/ship_models.py runs/linknet.pt:dsb2018-linknet runs/unet-stage5.pt:dsb2018-unet
# copies the best checkpoints into src/napari_nucleiseg/weights/ with their model cards.
# (The shipped dsb2018-linknet was last re-shipped from its own float16 file, for the
# thresholds and shape split; its weights are those of runs/linknet.pt in float16.)
#   bash scripts/train_shipped.sh [DATA_ROOT] [OUT_DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
data=${1:-$here/../../shared/data/dsb2018/stage1_train_fixed}
out=${2:-$here/../runs}
mkdir -p "$out"
# the later stages were run before a fine-tune had defaults of its own (8 crops a sample, the
# base's batch-norm statistics kept, replay, an anchor): these options restore what they did
refit=(--repeats 1 --learn-norm-stats --replay 0 --anchor 0)
common=(--exclude-ids "$here/splits/exclude_ids.txt" --val-ids "$here/splits/val_ids.txt"
        --crop-size 192 --batch-size 8 --optimizer adam --lr 1e-3 --weight-decay 1e-4
        --channels grey --maps body,border,contour --threads 1 --seed 0 --device auto --overwrite)
nucleiseg train "$data" -o "$out/linknet.pt" --model linknet --width 32 --epochs 30 "${common[@]}" \
  > "$out/linknet.log" 2>&1 &
linknet=$!
nucleiseg train "$data" -o "$out/unet.pt" --model unet --width 16 --depth 4 --epochs 14 "${common[@]}" \
  > "$out/unet.log" 2>&1 &
unet=$!
wait "$linknet"  # each job's own status: a failed stage 1 stops the script
wait "$unet"
# stage 2, alone on both cores (the shipped dsb2018-unet started from stage 1's weights as
# shipped: float16, with the thresholds tuned on the validation split); later options win
nucleiseg train "$data" -o "$out/unet-stage2.pt" --base-model "$out/unet.pt" --epochs 20 \
  "${common[@]}" "${refit[@]}" --lr 3e-4 --seed 1 --threads 2 > "$out/unet-stage2.log" 2>&1
# stage 3 (the shipped one started from stage 2 as shipped: float16, thresholds 0.7/0.9)
nucleiseg train "$data" -o "$out/unet-stage3.pt" --base-model "$out/unet-stage2.pt" --epochs 20 \
  "${common[@]}" "${refit[@]}" --lr 3e-4 --gap-weight 5 --seed 2 --threads 2 > "$out/unet-stage3.log" 2>&1
# stage 4: 34 more epochs, validating and keeping a moving average of the weights (--ema)
nucleiseg train "$data" -o "$out/unet-stage4.pt" --base-model "$out/unet-stage3.pt" --epochs 34 \
  "${common[@]}" "${refit[@]}" --lr 3e-4 --gap-weight 5 --ema 0.995 --seed 3 --threads 2 \
  > "$out/unet-stage4.log" 2>&1
# stage 5: one more cycle, 28 epochs
nucleiseg train "$data" -o "$out/unet-stage5.pt" --base-model "$out/unet-stage4.pt" --epochs 28 \
  "${common[@]}" "${refit[@]}" --lr 3e-4 --gap-weight 5 --ema 0.995 --seed 4 --threads 2 \
  > "$out/unet-stage5.log" 2>&1
tail -n 3 "$out/linknet.log" "$out/unet.log" "$out/unet-stage2.log" "$out/unet-stage3.log" \
  "$out/unet-stage4.log" "$out/unet-stage5.log"
