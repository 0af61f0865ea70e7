"""Classification metrics as plain dicts; writing them is the stages' job."""

from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np


def classification_metrics(y_true: Sequence[Hashable], y_pred: Sequence[Hashable],
                           labels: Sequence[Hashable]) -> dict:
    """accuracy, macro and weighted F1, and precision / recall / F1 / support per class."""
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=list(labels), zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1_macro": macro_f1(y_true, y_pred, labels),
        "f1_weighted": float(f1_score(y_true, y_pred, labels=list(labels),
                                      average="weighted", zero_division=0)),
        "per_class": {
            str(label): {"precision": float(p), "recall": float(r), "f1": float(f),
                         "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support)
        },
    }


def macro_f1(y_true: Sequence[Hashable], y_pred: Sequence[Hashable],
             labels: Sequence[Hashable]) -> float:
    """sklearn's f1_score(average="macro", zero_division=0), over all of `labels`.

    Averaging over all known labels (not only those present) keeps the score comparable
    between runs whose predictions miss a class. Computed here from the counts because
    importing sklearn.metrics costs every training process 1-3 s for this one number
    (tests/test_metrics.py checks it against sklearn)."""
    index = {label: i for i, label in enumerate(labels)}
    true = np.array([index.get(y, -1) for y in y_true])
    pred = np.array([index.get(y, -1) for y in y_pred])
    n = len(index)
    hits = np.bincount(true[(true == pred) & (true >= 0)], minlength=n)
    actual = np.bincount(true[true >= 0], minlength=n)
    predicted = np.bincount(pred[pred >= 0], minlength=n)
    denominator = actual + predicted
    f1 = np.divide(2 * hits, denominator, out=np.zeros(n), where=denominator > 0)
    return float(f1.mean())
