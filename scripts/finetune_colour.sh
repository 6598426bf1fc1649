#!/usr/bin/env bash
# The fine-tuning experiment of the correction loop: fine-tune a shipped model on the
# colour (H&E-like) images of stage1_train_fixed only, where it is weakest, and compare
# its validation score on the colour images of the validation split before and after.
#   bash scripts/finetune_colour.sh [BASE_MODEL] [DATA_ROOT] [OUT_DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
base=${1:-dsb2018-linknet}
data=${2:-$here/../../shared/data/dsb2018/stage1_train_fixed}
out=${3:-$here/../runs/finetune-colour}
mkdir -p "$out"
# colour validation ids, and everything that is not a colour training image to exclude
grep "# colour" "$here/splits/val_ids.txt" | cut -d' ' -f1 > "$out/val_ids.txt"
python - "$data" "$here" "$out" <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from make_splits import kind_of
from napari_nucleiseg.io import list_samples, read_stage1_image
from napari_nucleiseg.io.stage1 import image_path
data, here, out = map(Path, sys.argv[1:])
keep = {f.name for f in list_samples(data) if kind_of(read_stage1_image(image_path(f))) == "colour"}
exclude = {f.name for f in list_samples(data)} - keep
exclude |= set((here / "splits" / "exclude_ids.txt").read_text().split())
(out / "exclude_ids.txt").write_text("\n".join(sorted(i for i in exclude if not i.startswith("#"))) + "\n")
PY
nucleiseg train "$data" -o "$out/finetuned.pt" --base-model "$base" --epochs 8 --repeats 2 \
  --crop-size 192 --batch-size 8 --optimizer adam --lr 3e-4 --weight-decay 1e-4 \
  --exclude-ids "$out/exclude_ids.txt" --val-ids "$out/val_ids.txt" --threads 2 --seed 0 --overwrite
python - "$base" "$out/finetuned.pt" "$data" "$out/val_ids.txt" <<'PY'
import sys, warnings
warnings.simplefilter("ignore")
from pathlib import Path
from napari_nucleiseg.models import load_model
from napari_nucleiseg.training import evaluate, read_ids, read_samples
base, new, data, ids = sys.argv[1:]
val = read_samples([Path(data) / i for i in read_ids(ids)])
for name in (base, new):
    model, config = load_model(name)
    print(f"{name}: DSB2018 on {len(val)} colour validation images {evaluate(model, config, val).score:.4f}")
PY
