"""Experiment records made by hand for the report's tests (test_report, test_replicates):
what `textclf report` reads from `dvc exp show`, without running DVC."""

from __future__ import annotations

from textclf.reporting.experiments import Experiment

LABELS = ["neg", "neu", "pos"]
BASE_PARAMS = {"data.path": "data/reviews.csv", "data.class_ratio": None, "model.name": "tiny",
               "train.batch_size": 32, "train.lr": 1e-4, "evaluate.batch_size": 64}
REVIEWS = "e1901601+b636ea1d"                     # the test split's data fingerprint


def experiment(rev: str, name: str, f1: float, baseline: str = "b", epochs: int = 2,
               data: str = REVIEWS, stale: str = "", **params) -> Experiment:
    per_class = {label: round(f1 + d, 4) for label, d in zip(LABELS, (-0.1, 0.0, 0.1))}
    return Experiment(
        rev=rev * 7 if len(rev) == 1 else rev, name=name,
        baseline=baseline * 7 if len(baseline) == 1 else baseline,
        params={**BASE_PARAMS, **{k.replace("__", "."): v for k, v in params.items()}},
        metrics={"f1_macro": f1, "accuracy": f1 + 0.05, "best.val_f1_macro": f1 - 0.01,
                 "best_epoch": float(epochs), "train.loss": 1.0 - f1},
        data=data, stale=stale, per_class_f1=per_class,
        curves={"loss": [1.5 - 0.3 * e for e in range(epochs)],
                "val_accuracy": [f1 * (e + 1) / epochs for e in range(epochs)],
                "val_f1_macro": [f1 * (e + 1) / epochs for e in range(epochs)]},
        confusion=[(a, a) for a in LABELS] * 3 + [("neg", "pos"), ("pos", "neu")])
