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


# Calibration: how far predicted probabilities are from observed frequencies. `probs` is
# (N, C) with rows summing to 1, `y_true` the (N,) label ids.
ECE_BINS = 15   # Guo et al. 2017's equal-width bins
_FLOOR = 1e-12  # log(0) guard: a probability of exactly 0 for the true class costs 27.6 nats


def _bin_of(values: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bin of each value in [0, 1]: bin b holds (b/bins, (b+1)/bins], and bin 0
    also holds 0, as in Guo et al."""
    return np.clip(np.ceil(values * bins).astype(int) - 1, 0, bins - 1)


def reliability_table(probs: np.ndarray, y_true: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """The reliability diagram of the top label: per non-empty equal-width confidence bin,
    its bounds, mean confidence, accuracy and count."""
    confidence = probs.max(axis=1).astype(np.float64)
    correct = probs.argmax(axis=1) == np.asarray(y_true)
    which = _bin_of(confidence, bins)
    rows = []
    for b in range(bins):
        inside = which == b
        if inside.any():
            rows.append({"bin": b, "lower": b / bins, "upper": (b + 1) / bins,
                         "confidence": float(confidence[inside].mean()),
                         "accuracy": float(correct[inside].mean()), "count": int(inside.sum())})
    return rows


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray,
                               bins: int = ECE_BINS) -> float:
    """Top-label ECE (Guo et al. 2017): the count-weighted mean |accuracy - confidence|
    over equal-width confidence bins."""
    table = reliability_table(probs, y_true, bins)
    total = sum(row["count"] for row in table)
    return float(sum(row["count"] * abs(row["accuracy"] - row["confidence"]) for row in table)
                 / total) if total else 0.0


def classwise_calibration_error(probs: np.ndarray, y_true: np.ndarray,
                                bins: int = ECE_BINS) -> float:
    """Class-wise ECE (Kull et al. 2019): for every class k, the ECE of p_k against the event
    y == k over equal-width bins of p_k; the mean over classes. Unlike the top-label ECE it
    sees miscalibration of the probabilities a prediction does not pick."""
    y_true = np.asarray(y_true)
    n, classes = probs.shape
    if n == 0:
        return 0.0
    errors = []
    for k in range(classes):
        p = probs[:, k].astype(np.float64)
        hit = (y_true == k).astype(np.float64)
        # per bin: n_b * (frequency - mean probability); summed |.| / n is the weighted ECE
        gap = np.bincount(_bin_of(p, bins), weights=hit - p, minlength=bins)
        errors.append(float(np.abs(gap).sum() / n))
    return float(np.mean(errors))


def negative_log_likelihood(probs: np.ndarray, y_true: np.ndarray) -> float:
    """Mean -log p(true label), in nats."""
    y_true = np.asarray(y_true)
    true_prob = probs[np.arange(len(y_true)), y_true].astype(np.float64)
    return float(-np.log(np.clip(true_prob, _FLOOR, None)).mean()) if len(y_true) else 0.0


def brier_score(probs: np.ndarray, y_true: np.ndarray) -> float:
    """Multiclass Brier score (Brier 1950): mean over examples of sum_k (p_k - [y == k])^2,
    0 (perfect) to 2."""
    y_true = np.asarray(y_true)
    if not len(y_true):
        return 0.0
    onehot = np.eye(probs.shape[1])[y_true]
    return float(((probs.astype(np.float64) - onehot) ** 2).sum(axis=1).mean())


def calibration_metrics(probs: np.ndarray, y_true: np.ndarray) -> dict[str, float]:
    """ece (top-label, 15 bins), classwise_ece, nll and brier of one set of probabilities."""
    return {"ece": expected_calibration_error(probs, y_true),
            "classwise_ece": classwise_calibration_error(probs, y_true),
            "nll": negative_log_likelihood(probs, y_true),
            "brier": brier_score(probs, y_true)}
