"""How often does `textclf drift` cry wolf, and does it see a real change? Three rules side by side.

    python benchmarks/drift_false_alarms.py [--splits 200] [--rounds 20]

False alarms: the demo reviews (data/reviews.csv) are split at random, `--splits` times,
into a test split (20%), a reference (40%) and a current window (40%) of the same data;
any alarm is false. Detection: the current window mixes SST-5 movie sentences (from
../shared/data/sst5/dev.csv; skipped when absent) into held-out reviews at 0-100%,
`--rounds` times per cell, at two window sizes.

The "model" is a stand-in: TF-IDF + logistic regression trained on each reference with its
gold labels, so predicted labels and confidences behave like a real classifier's without
fine-tuning a transformer 200 times. The rules compared, on the same AUC and labels:

  textclf    drift if AUC > max(0.55, 97.5th permutation percentile), or predicted labels
             moved (chi-squared p < 0.025 and PSI >= 0.1): the verdict of `textclf drift`
  evidently  Evidently's text rule alone: AUC > 0.55 when the reference has more than 1,000
             rows, else AUC > the 95th percentile of a random classifier's AUC
  naive      both tests at 5% each, no effect-size floor: AUC > 95th percentile or p < 0.05
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from textclf.monitoring.inputs import Predictions
from textclf.monitoring.report import Sources, compare
from textclf.monitoring.stats import domain_classifier

REPO = Path(__file__).resolve().parents[1]
SST5_DEV = REPO.parent / "shared" / "data" / "sst5" / "dev.csv"
RULES = ("textclf", "evidently", "naive")
SOURCES = Sources("reference", "current", "test", "stand-in")


def stand_in_model(reference: pd.DataFrame):
    """A cheap real classifier of the reference's labels: texts -> Predictions."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(TfidfVectorizer(sublinear_tf=True),
                          LogisticRegression(max_iter=1000)).fit(reference.text, reference.label)

    def predict(texts: list[str]) -> Predictions:
        probs = model.predict_proba(texts)                       # (N, C)
        return Predictions(tuple(texts), tuple(model.classes_[probs.argmax(axis=1)]),
                           tuple(probs.max(axis=1)))
    return predict, list(model.classes_)


def alarms(reference: pd.DataFrame, test: pd.DataFrame, current: list[str],
           seed: int) -> dict[str, bool]:
    """Whether each rule flags `current` against `reference`."""
    predict, labels = stand_in_model(reference)
    report = compare(list(reference.text), predict(list(test.text)), predict(current), labels,
                     SOURCES, seed=seed)
    # The same split and fit (same seed), with the 95th instead of the 97.5th percentile.
    at_5 = domain_classifier(list(reference.text), current, seed=seed, alpha=0.05)
    assert at_5.auc == report.domain.auc
    evidently = at_5.auc > (0.55 if len(reference) > 1000 else at_5.permutation_threshold)
    naive = at_5.auc > at_5.permutation_threshold or report.labels.p_value < 0.05
    return {"textclf": report.drifted, "evidently": evidently, "naive": naive}


def three_way(data: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    rows = data.iloc[np.random.default_rng(seed).permutation(len(data))]
    cut1, cut2 = len(rows) // 5, len(rows) * 3 // 5
    return rows.iloc[:cut1], rows.iloc[cut1:cut2], rows.iloc[cut2:]


def false_alarms(data: pd.DataFrame, splits: int) -> dict[str, int]:
    counts = dict.fromkeys(RULES, 0)
    for seed in range(splits):
        test, reference, current = three_way(data, seed)
        for rule, flagged in alarms(reference, test, list(current.text), seed).items():
            counts[rule] += flagged
    return counts


def detections(data: pd.DataFrame, movies: pd.DataFrame, size: int, share: float,
               rounds: int) -> dict[str, int]:
    counts = dict.fromkeys(RULES, 0)
    for r in range(rounds):
        test, reference, pool = three_way(data, 10_000 + r)
        rng = np.random.default_rng(r)
        n_movies = round(share * size)
        current = [*rng.choice(pool.text.to_numpy(), size - n_movies, replace=False),
                   *rng.choice(movies.text.to_numpy(), n_movies, replace=False)]
        for rule, flagged in alarms(reference, test, current, r).items():
            counts[rule] += flagged
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--splits", type=int, default=200, help="random splits, >= 20")
    parser.add_argument("--rounds", type=int, default=20, help="windows per detection cell")
    args = parser.parse_args()
    data = pd.read_csv(REPO / "data" / "reviews.csv")
    start = time.perf_counter()
    counts = false_alarms(data, max(args.splits, 20))
    print(f"False alarms on {max(args.splits, 20)} random splits of data/reviews.csv "
          f"({len(data)} rows: test 20%, reference 40%, current 40%), "
          f"{time.perf_counter() - start:.0f} s:")
    print("| rule | false alarms | rate |\n| --- | --- | --- |")
    for rule, n in counts.items():
        print(f"| {rule} | {n} / {max(args.splits, 20)} | {100 * n / max(args.splits, 20):.1f}% |")
    if not SST5_DEV.is_file():
        print(f"\nDetection skipped: {SST5_DEV} not found.")
        return
    movies = pd.read_csv(SST5_DEV)
    print(f"\nDetection: share of {args.rounds} current windows flagged, SST-5 dev sentences "
          f"mixed into held-out reviews (reference: 40% of the reviews):")
    print("| window | movie share | " + " | ".join(RULES) + " |\n|" + " --- |" * (2 + len(RULES)))
    for size in (100, 500):
        for share in (0.0, 0.1, 0.25, 0.5, 1.0):
            found = detections(data, movies, size, share, args.rounds)
            print(f"| {size} | {share:.0%} | "
                  + " | ".join(f"{100 * found[r] / args.rounds:.0f}%" for r in RULES) + " |")


if __name__ == "__main__":
    main()
