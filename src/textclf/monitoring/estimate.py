"""How well does the model do on the current window? Estimated without labels.

Two estimators, both pure functions of probabilities (numpy in, dataclass out):

- CBPE, confidence-based performance estimation (as NannyML does it): with calibrated
  probabilities a prediction is right with the probability of its top class, so the
  expected accuracy is the mean top-class probability, and the expected confusion matrix
  (row i adds p_i to the column of its predicted class) gives expected per-class
  precision, recall and so macro-F1.
- ATC, average thresholded confidence (Garg et al. 2022, "Leveraging Unlabeled Data to
  Predict Out-of-Distribution Performance", ICLR): a threshold t is fitted on a labelled
  held-out split (the validation split, never the test split the report compares with)
  so that the share of its confidences above t equals its accuracy; the estimate is the
  share of the window's confidences above t.

Both assume that calibration fitted on the training domain still holds on the window.
Under concept shift it does not, and the estimates are then confident and wrong:
`reliability` marks them so when either of two signals fires: the domain classifier tells
the window from the reference at all (MAX_RELIABLE_AUC), or the window's texts lie farther
from the training texts than the validation split's do (the nearest-neighbour novelty of
textclf.monitoring.novelty, MAX_RELIABLE_NOVELTY). Both limits are measured in
benchmarks/performance_estimate.py and docs/monitoring.md: a few foreign texts already
move accuracy more than confidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from textclf.monitoring.novelty import NoveltyResult

Z95 = 1.959963984540054    # two-sided 95% normal quantile
F1_DRAWS = 400             # label draws for the macro-F1 interval
# Above this domain-classifier AUC the estimates are marked unreliable. Measured on
# windows of demo validation texts mixed with SST-5 *training* sentences (not the demo
# test split or SST-5 dev, which the benchmark reports on): the lowest AUC of a window
# whose CBPE missed by more than 5 points and more than its interval explains was 0.542
# (15% movie sentences, a 7.8-point miss); errors grow with the foreign share long
# before the classifier separates the sides well. Below Evidently's 0.55, so the
# estimate is never trusted where text drift is detected. benchmarks/performance_estimate.py
MAX_RELIABLE_AUC = 0.54
# Above this novelty AUC (textclf.monitoring.novelty) the estimates are marked unreliable.
# Measured on rule-fitting windows (one half of the demo validation split mixed with 0-100%
# SST-5 training sentences, novelty against the other half): CBPE's error and the novelty
# AUC both grow in proportion to the foreign share, and a straight line through them
# reaches 5 points at 0.56; the lowest novelty AUC of a window that missed by more than 5
# points was 0.548 (15% movie sentences), so 0.54: the goal bounds each window's error,
# not their mean. benchmarks/performance_estimate.py
MAX_RELIABLE_NOVELTY = 0.54


@dataclass(frozen=True)
class ConfidenceEstimate:
    """CBPE of one window. The intervals hold the window's realised score 95% of the time
    if the probabilities are calibrated on it; they do not widen for miscalibration."""
    rows: int
    accuracy: float
    accuracy_low: float
    accuracy_high: float
    f1_macro: Optional[float] = None         # None without full (N, C) probabilities
    f1_macro_low: Optional[float] = None
    f1_macro_high: Optional[float] = None
    text_sd: float = 0.0                     # one text's right-or-wrong sd: sqrt(mean p(1-p))

    def texts_for(self, points: float) -> int:
        """About how many texts like these make the accuracy interval ±`points` (it
        narrows as 1 / sqrt(texts)): how big a window must be to tell that much."""
        return max(1, int(np.ceil((Z95 * self.text_sd * 100 / points) ** 2)))


def expected_accuracy(top: np.ndarray) -> tuple[float, float, float]:
    """(mean, low, high): the number right is a sum of independent Bernoullis with the
    top-class probabilities (a Poisson binomial), variance sum p (1 - p); the 95% interval
    is its normal approximation, clipped to [0, 1]."""
    top = np.asarray(top, dtype=np.float64)
    if top.size == 0:
        raise ValueError("expected_accuracy: no rows")
    mean = float(top.mean())
    half = Z95 * float(np.sqrt(np.sum(top * (1 - top)))) / top.size
    return mean, max(0.0, mean - half), min(1.0, mean + half)


def expected_confusion(probs: np.ndarray) -> np.ndarray:
    """(C, C) expected counts, [true class, predicted class]: row i adds its probabilities
    p_i to the column of its top class."""
    probs = np.asarray(probs, dtype=np.float64)
    predicted = probs.argmax(axis=1)
    matrix = np.zeros((probs.shape[1], probs.shape[1]))
    np.add.at(matrix.T, predicted, probs)      # matrix.T[j] += p_i for rows predicted j
    return matrix


def f1_from_confusion(matrix: np.ndarray) -> np.ndarray:
    """Per-class F1 = 2 TP / (actual + predicted), 0 where a class is neither (as
    textclf.metrics and sklearn's zero_division=0)."""
    hits = np.diag(matrix)
    total = matrix.sum(axis=0) + matrix.sum(axis=1)
    return np.divide(2 * hits, total, out=np.zeros_like(hits), where=total > 0)


def expected_f1_macro(probs: np.ndarray) -> float:
    """Macro-F1 of the expected confusion matrix (a ratio of expectations, as NannyML's
    CBPE; its bias is small next to the interval for windows of a hundred texts or more)."""
    return float(f1_from_confusion(expected_confusion(probs)).mean())


def f1_macro_interval(probs: np.ndarray, draws: int = F1_DRAWS, seed: int = 0
                      ) -> tuple[float, float]:
    """The 2.5% and 97.5% quantiles of the window's macro-F1 when its true labels are
    drawn from `probs` (predictions fixed): the F1 analogue of the accuracy interval."""
    probs = np.asarray(probs, dtype=np.float64)
    n, classes = probs.shape
    predicted = probs.argmax(axis=1)
    rng = np.random.default_rng(seed)
    cumulative = probs.cumsum(axis=1)
    drawn = (cumulative[None, :, :] < rng.random((draws, n, 1))).sum(axis=2)   # (D, N)
    drawn = np.minimum(drawn, classes - 1)
    cells = np.arange(draws)[:, None] * classes * classes + drawn * classes + predicted
    counts = np.bincount(cells.ravel(), minlength=draws * classes * classes)
    matrices = counts.reshape(draws, classes, classes)                        # (D, C, C)
    hits = np.diagonal(matrices, axis1=1, axis2=2)
    total = matrices.sum(axis=1) + matrices.sum(axis=2)
    f1 = np.divide(2 * hits, total, out=np.zeros(hits.shape), where=total > 0).mean(axis=1)
    low, high = np.quantile(f1, [0.025, 0.975])
    return float(low), float(high)


def cbpe(top: np.ndarray, probs: Optional[np.ndarray] = None, seed: int = 0
         ) -> ConfidenceEstimate:
    """CBPE of a window from its top-class probabilities (N,) and, where known, all its
    probabilities (N, C) for macro-F1."""
    accuracy, low, high = expected_accuracy(top)
    top = np.asarray(top, dtype=np.float64)
    text_sd = float(np.sqrt(np.mean(top * (1 - top))))
    if probs is None:
        return ConfidenceEstimate(len(top), accuracy, low, high, text_sd=text_sd)
    f1_low, f1_high = f1_macro_interval(probs, seed=seed)
    return ConfidenceEstimate(len(top), accuracy, low, high, expected_f1_macro(probs),
                              f1_low, f1_high, text_sd)


@dataclass(frozen=True)
class ATCThreshold:
    """An ATC threshold and the labelled split it was fitted on."""
    threshold: float
    accuracy: float          # the split's accuracy, which the threshold reproduces there
    rows: int
    source: str = ""

    def estimate(self, top: np.ndarray) -> float:
        """ATC's accuracy estimate: the share of confidences above the threshold."""
        return float(np.mean(np.asarray(top, dtype=np.float64) > self.threshold))


def fit_atc(top: np.ndarray, correct: np.ndarray, source: str = "") -> ATCThreshold:
    """The threshold t with share(top > t) = accuracy on a labelled split (Garg et al.'s
    ATC with the max-confidence score): t is the (k+1)-th largest confidence, k the number
    right, so the k largest lie strictly above it (ties aside)."""
    top = np.asarray(top, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    if top.size == 0 or top.shape != correct.shape:
        raise ValueError("fit_atc: needs one correctness flag per confidence, at least one")
    k = int(correct.sum())
    ordered = np.sort(top)[::-1]
    threshold = float(ordered[k]) if k < top.size else float(np.nextafter(ordered[-1], -1))
    return ATCThreshold(threshold, k / top.size, int(top.size), source)


@dataclass(frozen=True)
class Reliability:
    reason: str              # one line for the reader, either way
    f1_reliable: bool = True     # macro-F1 also needs the class mix to hold
    f1_reason: str = ""
    domain_fired: bool = False   # the signals that make the estimates unreliable
    novelty_fired: bool = False
    untrusted: tuple[str, ...] = ()  # what the command knows makes them so (see below)

    @property
    def reliable(self) -> bool:
        """The estimates as a whole: neither signal fired, nothing else known against."""
        return not (self.domain_fired or self.novelty_fired or self.untrusted)


def reliability(domain_auc: float, labels_moved: bool = False,
                max_auc: float = MAX_RELIABLE_AUC, novelty: Optional[NoveltyResult] = None,
                max_novelty: float = MAX_RELIABLE_NOVELTY,
                untrusted: Sequence[str] = ()) -> Reliability:
    """Whether the window is close enough to the training domain for calibrated
    confidences to carry over (the assumption of both estimators): neither the domain
    classifier's AUC nor, where measured, the novelty AUC above its limit. Macro-F1 also
    fails when the predicted labels moved (benchmarks/performance_estimate.py: accuracy
    held within 2 points on a window of positive reviews only, macro-F1 was 30 points
    off), because a class the window lacks scores 0 whatever its expected counts say.
    `untrusted`: reasons the caller knows of, each a clause (the window's probabilities
    are not the kind the estimators were fitted on, or another model's, or the window
    is largely training texts): any of them makes the estimates unreliable too."""
    domain_fired = domain_auc > max_auc
    novelty_fired = novelty is not None and novelty.auc > max_novelty
    signals = [f"the domain classifier {'tells' if domain_fired else 'does not tell'} the "
               f"current texts from the reference (AUC {domain_auc:.3f} "
               f"{'>' if domain_fired else '<='} {max_auc})"]
    if novelty is not None:
        signals.append(
            f"the current texts lie {'farther' if novelty_fired else 'no farther'} from the "
            f"training texts than the validation texts do (novelty AUC {novelty.auc:.3f} "
            f"{'>' if novelty_fired else '<='} {max_novelty}; {novelty.novel_share:.0%} of "
            f"them beyond 95% of the validation texts, in the model's own representation)")
    if domain_fired or novelty_fired:
        fired = [s for s, on in zip(signals, (domain_fired, novelty_fired)) if on]
        return Reliability("; ".join([*untrusted, *fired]) + ": confidences calibrated on "
                           "the training domain need not hold on these texts, and the "
                           "estimate can be off by tens of points", f1_reliable=False,
                           domain_fired=domain_fired, novelty_fired=novelty_fired,
                           untrusted=tuple(untrusted))
    if untrusted:
        return Reliability("; ".join(untrusted) + ": the estimate can be off by tens of "
                           "points", f1_reliable=False, untrusted=tuple(untrusted))
    f1_reason = ("the predicted labels moved from the test split, and macro-F1 counts a "
                 "class the window lacks as 0, so its estimate can be far off; accuracy's "
                 "holds" if labels_moved else "")
    unmeasured = ("" if novelty is not None else
                  " (novelty not measured: no validation split)")
    return Reliability("; ".join(signals) + unmeasured + ": calibrated confidences can "
                       "carry over", f1_reliable=not labels_moved, f1_reason=f1_reason)


@dataclass(frozen=True)
class PerformanceEstimate:
    """What the report shows: the window's estimates, the same estimators on the labelled
    test split beside its true scores, and whether to trust the window's."""
    current: ConfidenceEstimate
    current_atc: Optional[float]
    test: ConfidenceEstimate
    test_atc: Optional[float]
    test_accuracy: Optional[float]           # None when the test split has no labels
    test_f1_macro: Optional[float]
    atc: Optional[ATCThreshold]
    reliability: Reliability
    novelty: Optional[NoveltyResult] = None

    @property
    def reliable(self) -> bool:
        return self.reliability.reliable


def estimate_performance(current_top: np.ndarray, current_probs: Optional[np.ndarray],
                         test_top: np.ndarray, test_probs: Optional[np.ndarray],
                         domain_auc: float, atc: Optional[ATCThreshold] = None,
                         test_scores: Optional[tuple[float, float]] = None,
                         labels_moved: bool = False, seed: int = 0,
                         novelty: Optional[NoveltyResult] = None,
                         untrusted: Sequence[str] = ()) -> PerformanceEstimate:
    """`test_scores`: the test split's true (accuracy, macro-F1), where it has labels;
    `labels_moved`: the drift report's predicted-label test fired; `novelty`: the window
    against the validation split (None where there is none)."""
    accuracy, f1 = test_scores if test_scores is not None else (None, None)
    return PerformanceEstimate(
        current=cbpe(current_top, current_probs, seed),
        current_atc=atc.estimate(current_top) if atc else None,
        test=cbpe(test_top, test_probs, seed), test_atc=atc.estimate(test_top) if atc else None,
        test_accuracy=accuracy, test_f1_macro=f1, atc=atc,
        reliability=reliability(domain_auc, labels_moved, novelty=novelty,
                                untrusted=untrusted),
        novelty=novelty)
