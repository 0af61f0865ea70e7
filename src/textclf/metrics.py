"""Classification metrics as plain dicts; writing them is the stages' job."""

from __future__ import annotations

from typing import Hashable, NamedTuple, Sequence

import numpy as np


def classification_metrics(y_true: Sequence[Hashable], y_pred: Sequence[Hashable],
                           labels: Sequence[Hashable]) -> dict:
    """accuracy, macro and weighted F1, and precision / recall / F1 / support per class:
    sklearn's numbers (`zero_division=0`, averaged over all of `labels`), computed from the
    counts because importing sklearn costs every process that scores a model 1-3 s
    (tests/test_metrics.py checks them against sklearn)."""
    counts = _counts(y_true, y_pred, labels)
    return {
        "accuracy": float(np.mean(np.asarray(y_true, dtype=object) ==
                                  np.asarray(y_pred, dtype=object))) if len(y_true) else 0.0,
        "f1_macro": float(counts.f1.mean()) if len(counts.f1) else 0.0,
        "f1_weighted": float(np.average(counts.f1, weights=counts.support))
        if counts.support.sum() else 0.0,
        "per_class": {
            str(label): {"precision": float(p), "recall": float(r), "f1": float(f),
                         "support": int(n)}
            for label, p, r, f, n in zip(labels, counts.precision, counts.recall, counts.f1,
                                         counts.support)
        },
    }


class _Counts(NamedTuple):
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray


def _counts(y_true: Sequence[Hashable], y_pred: Sequence[Hashable],
            labels: Sequence[Hashable]) -> _Counts:
    """Per label: precision, recall, F1 (0 where undefined) and true count; a value outside
    `labels` counts against the others' precision/recall but has no row of its own."""
    index = {label: i for i, label in enumerate(labels)}
    true = np.array([index.get(y, -1) for y in y_true], dtype=int)
    pred = np.array([index.get(y, -1) for y in y_pred], dtype=int)
    n = len(index)
    hits = np.bincount(true[(true == pred) & (true >= 0)], minlength=n)
    actual = np.bincount(true[true >= 0], minlength=n)
    predicted = np.bincount(pred[pred >= 0], minlength=n)

    def ratio(top, bottom):
        return np.divide(top, bottom, out=np.zeros(n), where=bottom > 0)

    return _Counts(ratio(hits, predicted), ratio(hits, actual),
                   ratio(2 * hits, actual + predicted), actual)


def macro_f1(y_true: Sequence[Hashable], y_pred: Sequence[Hashable],
             labels: Sequence[Hashable]) -> float:
    """sklearn's f1_score(average="macro", zero_division=0), over all of `labels`.

    Averaging over all known labels (not only those present) keeps the score comparable
    between runs whose predictions miss a class."""
    f1 = _counts(y_true, y_pred, labels).f1
    return float(f1.mean()) if len(f1) else 0.0
