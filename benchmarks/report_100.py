"""Time `textclf report`'s core on 100 synthetic experiments (no DVC runs needed).

    python benchmarks/report_100.py [--experiments 100] [--out /tmp/report_100]

The records look like what `collect` reads from `dvc exp show`: a baseline and a grid over
batch size, learning rate and class ratio, each with 4 epochs of curves, per-class F1 and
a 250-example confusion matrix. Only `build_report` is timed.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import random
import time
from pathlib import Path

from textclf.report import Experiment, build_report

LABELS = ["very negative", "negative", "neutral", "positive", "very positive"]


def synthetic_experiment(i: int, baseline: str, params: dict, rng: random.Random) -> Experiment:
    skill = rng.uniform(0.3, 0.9)
    confusion = [(actual, actual if rng.random() < skill else rng.choice(LABELS))
                 for actual in LABELS for _ in range(50)]
    per_class = {label: min(1.0, skill + rng.uniform(-0.1, 0.1)) for label in LABELS}
    rev = hashlib.sha1(str(i).encode()).hexdigest()   # a git-like commit id
    return Experiment(
        rev=rev, name="main" if rev == baseline else f"exp-{i:03d}", named=rev == baseline,
        baseline=baseline, params=params,
        metrics={"f1_macro": sum(per_class.values()) / len(LABELS), "accuracy": skill,
                 "f1_weighted": skill, "best.val_f1_macro": skill, "best_epoch": 4},
        per_class_f1=per_class,
        curves={"loss": [1.6 * (1 - skill) ** (e / 4) for e in range(4)],
                "val_accuracy": [skill * (e + 1) / 4 for e in range(4)],
                "val_f1_macro": [skill * (e + 1) / 4.2 for e in range(4)]},
        confusion=confusion)


def synthetic_experiments(count: int, seed: int = 0) -> list[Experiment]:
    rng = random.Random(seed)
    base_params = {"data.class_ratio": None, "train.batch_size": 32, "train.lr": 1e-4,
                   "train.epochs": 4, "evaluate.batch_size": 64}
    baseline = hashlib.sha1(b"0").hexdigest()
    grid = itertools.product([8, 16, 32, 64], [1e-5, 3e-5, 1e-4, 3e-4, 1e-3],
                             [None, [1, 1, 1, 1, 1], [2, 1, 1, 1, 1], [1, 1, 2, 1, 1],
                              [3, 2, 1, 1, 1]])
    exps = [synthetic_experiment(0, baseline, base_params, rng)]
    for i, (batch, lr, ratio) in zip(range(1, count), grid):
        params = {**base_params, "train.batch_size": batch, "train.lr": lr,
                  "data.class_ratio": ratio}
        exps.append(synthetic_experiment(i, baseline, params, rng))
    return exps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, help="also write the page and summary here")
    args = parser.parse_args()

    exps = synthetic_experiments(args.experiments)
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        page, summary = build_report(exps)
        times.append(time.perf_counter() - start)
    print(f"build_report: {len(exps)} experiments in {min(times) * 1000:.1f} ms "
          f"(best of {args.repeat}; median {sorted(times)[len(times) // 2] * 1000:.1f} ms), "
          f"HTML {len(page) / 1024:.0f} KiB, Markdown {len(summary) / 1024:.0f} KiB")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "experiments.html").write_text(page, encoding="utf-8")
        (args.out / "experiments.md").write_text(summary, encoding="utf-8")
        print(f"wrote {args.out}/experiments.html and experiments.md")


if __name__ == "__main__":
    main()
