"""Classification metrics as plain dicts; writing them is the stages' job."""

from __future__ import annotations

from typing import Hashable, Sequence

from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support


def classification_metrics(y_true: Sequence[Hashable], y_pred: Sequence[Hashable],
                           labels: Sequence[Hashable]) -> dict:
    """accuracy, macro and weighted F1, and precision / recall / F1 / support per class."""
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
    # Averaging over all known labels (not only those present) keeps the score
    # comparable between runs whose predictions miss a class.
    return float(f1_score(y_true, y_pred, labels=list(labels), average="macro",
                          zero_division=0))
