#!/usr/bin/env bash
# The SST-5 recipe study (benchmarks/sst5_recipe.md), as DVC experiments through the queue.
# Run in a scratch clone of this repository with ../shared/data/sst5 beside it (or set
# SST5 to a folder with train.csv and dev.csv). About 3 hours on 2 cores.
set -euo pipefail
SST5=${SST5:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data/sst5}

# The baseline commit: SST-5's official train split for training, its dev split for
# validation (picking the epoch and the recipe), a 2% test split cut from train for the
# evaluate stage (SST-5's test split is never used). An absolute path, because queued runs
# work in temporary copies of the project.
python - "$SST5" <<'PY'
import sys
from ruamel.yaml import YAML
yaml = YAML()
params = yaml.load(open("params.yaml"))
params["data"].update(path=sys.argv[1], labels=None, overlap="drop_from_train", test_size=0.02)
yaml.dump(params, open("params.yaml", "w"))
PY
dvc repro prepare resample
git add -A && git commit -qm "SST-5 study baseline: official train/dev, 2% test cut"

q() { dvc exp run --queue -n "$@"; }
# The current default (6 epochs), then a 3-epoch screen of one lever at a time.
q default6
q s-base -S train.epochs=3
q s-lr2e4 -S train.epochs=3 -S train.lr=0.0002
q s-lr5e5 -S train.epochs=3 -S train.lr=0.00005
q s-ls -S train.epochs=3 -S train.label_smoothing=0.1
q s-llrd -S train.epochs=3 -S train.lr=0.0002 -S train.layer_lr_decay=0.8
q s-ema -S train.epochs=3 -S train.ema_decay=0.99
# Seeds: the spread a lever must beat; the finalist combining the two best levers.
q s-base-seed1 -S train.epochs=3 -S train.seed=1
q s-base-seed2 -S train.epochs=3 -S train.seed=2
combo=(-S train.epochs=3 -S train.lr=0.0002 -S train.layer_lr_decay=0.8 -S train.ema_decay=0.99)
q s-combo "${combo[@]}"
q s-combo-seed1 "${combo[@]}" -S train.seed=1
q s-combo-seed2 "${combo[@]}" -S train.seed=2
q s-rdrop -S train.epochs=3 -S train.rdrop=1.0
OMP_NUM_THREADS=1 dvc queue start -j 2
echo "when 'dvc queue status' shows no Running task:"
echo "  textclf report --sort-by best.val_f1_macro --markdown sst5_recipe.md --html sst5_recipe.html"
