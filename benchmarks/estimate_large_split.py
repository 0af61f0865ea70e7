"""Accuracy without labels, in distribution, on a test split large enough to tell 3 points.

    OMP_NUM_THREADS=2 python benchmarks/calibration_sst5.py --test-size 0.2 --keep /tmp/sst5big
    OMP_NUM_THREADS=2 python benchmarks/estimate_large_split.py --project /tmp/sst5big

benchmarks/performance_estimate.py measures the drift report's estimates (CBPE and ATC,
textclf.monitoring.estimate) on the demo, whose test split has 250 texts: random windows of
100 of them cannot be estimated within 3 points 90% of the time by any label-free method
(the share of right answers in 100 texts varies by about 4 points even when every
probability is exact). This script asks the same question of a project trained by the
pipeline with a larger test split (the first command: SST-5, 20% of its training sentences
cut as the test split, 1,706 of them, temperature and ATC threshold fitted on SST-5 dev as
the validation split): `--windows` random windows of each `--sizes` texts, drawn without
replacement, each scored as `textclf drift` scores a window (CBPE, ATC, and the domain
classifier against the training split, which marks an estimate unreliable). Beside them
the ceiling: the same windows with each label drawn from the calibrated probabilities, so
that calibration holds exactly and only sampling noise is left. The model labels in
PyTorch fp32. Exits with a message when the project folder is absent.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _common import machine
from _estimate_windows import GOAL_IN_DISTRIBUTION


def labelled(project: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """{split: (texts, gold label ids, calibrated probabilities)} of train, val and test."""
    from textclf.model.labeller import Labeller

    labeller = Labeller.load(project / "models" / "classifier", "fp32", calibrated=False)
    calibration = labeller.info.calibrator()
    if calibration is None:
        raise SystemExit(f"{project}: the model folder records no calibration")
    index = {label: i for i, label in enumerate(labeller.labels)}
    found = {}
    for name in ("train", "val", "test"):
        frame = pd.read_parquet(project / "data" / "prepared" / f"{name}.parquet")
        texts = frame.text.to_numpy(object)
        probs = calibration.apply(labeller.probabilities(frame.text.tolist()))
        found[name] = (texts, frame.label.map(index).to_numpy(), probs)
    print(f"temperature {calibration.temperature:.3f} (the model folder's)")
    return found


def windows(test, train_texts: list[str], atc, size: int, count: int, seed: int) -> dict:
    """Errors of CBPE, ATC and the ceiling over `count` random windows of `size` texts."""
    from textclf.monitoring.estimate import cbpe, reliability
    from textclf.monitoring.stats import domain_classifier

    texts, gold, probs = test
    rng = np.random.default_rng(seed)
    top, predicted = probs.max(axis=1), probs.argmax(axis=1)
    rows_of = {"cbpe": [], "atc": [], "ceiling": [], "covered": [], "reliable": []}
    for window in range(count):
        rows = rng.choice(len(gold), size, replace=False)
        true = float(np.mean(predicted[rows] == gold[rows]))
        estimate = cbpe(top[rows])
        rows_of["cbpe"].append(abs(estimate.accuracy - true))
        rows_of["atc"].append(abs(atc.estimate(top[rows]) - true))
        # the ceiling: labels drawn afresh for each window from the calibrated probabilities
        drawn = (probs[rows].cumsum(axis=1) < rng.random((size, 1))).sum(axis=1)
        rows_of["ceiling"].append(abs(top[rows].mean() - np.mean(predicted[rows] == drawn)))
        rows_of["covered"].append(estimate.accuracy_low <= true <= estimate.accuracy_high)
        domain = domain_classifier(train_texts, list(texts[rows]), seed=window)
        rows_of["reliable"].append(reliability(domain.auc).reliable)
    return {key: np.array(value) for key, value in rows_of.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, required=True,
                        help="a project folder after `dvc repro` (calibration_sst5.py --keep)")
    parser.add_argument("--sizes", default="100,200,500", help="texts per window")
    parser.add_argument("--windows", type=int, default=50, help="windows per size")
    args = parser.parse_args()
    if not (args.project / "models" / "classifier").is_dir():
        print(f"{args.project}: no models/classifier; run calibration_sst5.py --keep first")
        return
    from textclf.monitoring.estimate import fit_atc

    print(machine())
    started = time.perf_counter()
    data = labelled(args.project)
    val_texts, val_gold, val_probs = data["val"]
    atc = fit_atc(val_probs.max(axis=1), val_probs.argmax(axis=1) == val_gold,
                  "validation split")
    texts, gold, probs = data["test"]
    right = probs.argmax(axis=1) == gold
    print(f"labelled {sum(len(d[1]) for d in data.values()):,} texts in "
          f"{time.perf_counter() - started:.0f} s; test split {len(gold):,} texts, accuracy "
          f"{right.mean():.3f}, CBPE on the whole split {probs.max(axis=1).mean():.3f}; ATC "
          f"threshold {atc.threshold:.3f} fitted on the validation split ({atc.rows:,} texts)")
    goal = GOAL_IN_DISTRIBUTION
    print(f"\n| texts per window | windows | CBPE within {goal * 100:g} points | ATC within "
          f"{goal * 100:g} | ceiling within {goal * 100:g} | CBPE mean abs error | largest | "
          f"CBPE 95% interval covers | marked reliable |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for size in (int(s) for s in args.sizes.split(",")):
        found = windows(data["test"], list(data["train"][0]), atc, size, args.windows,
                        seed=size)
        print(f"| {size} | {args.windows} | {np.mean(found['cbpe'] <= goal):.0%} | "
              f"{np.mean(found['atc'] <= goal):.0%} | {np.mean(found['ceiling'] <= goal):.0%} | "
              f"{100 * found['cbpe'].mean():.1f} | {100 * found['cbpe'].max():.1f} | "
              f"{found['covered'].mean():.0%} | {found['reliable'].mean():.0%} |", flush=True)


if __name__ == "__main__":
    main()
