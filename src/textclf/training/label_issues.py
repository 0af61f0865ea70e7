"""Which given labels look wrong: confident learning over out-of-sample probabilities.

The method is that of Northcutt, Jiang and Chuang, "Confident Learning: Estimating
Uncertainty in Dataset Labels", JAIR 70 (2021), implemented here from the paper:

1. per-class thresholds t_j: the mean probability of class j over the examples labelled j
   (a model's own confidence level per class, so over- or under-confidence cancels out);
2. the confident joint C[i][j]: examples labelled i whose probability of class j reaches
   t_j (the most probable such class where several do), i.e. confidently of class j;
3. C calibrated so that row i sums to the count of label i (the paper's calibration); its
   off-diagonal mass estimates how many labels are wrong, row by row the noise rate of
   each given class;
4. which examples: "prune by noise rate" (for each off-diagonal cell (i, j), the round(C[i][j])
   examples labelled i with the largest margin p_j - p_i), "prune by class" (for each
   class i, the round(sum of row i off the diagonal) least self-confident examples
   labelled i), or "both" (flagged by each). An example whose given label is still its
   most probable class is never flagged by these (a cell's count can exceed the examples
   that prefer its class): that is no confident disagreement. The plain baseline,
   `self-confidence`, takes the examples with the lowest probability of their given label,
   as many as the confident joint estimates are wrong.

Suspects are ranked by self-confidence (the probability of the given label), by the
normalised margin (that probability minus the largest other), lowest first, or
`combined`: the mean of an example's rank by self-confidence and its rank by the area under
the margin while it was trained on (AUM, Pleiss et al., NeurIPS 2020; textclf.training.
cross_fit takes it), two views of one label: from a model that never saw it, and from the
models that had to learn it. On the demo data with 5% of labels flipped, `combined` put
0.55 of the flipped rows in the top k against 0.44 for self-confidence (five seeds;
benchmarks/README.md, "Finding flipped labels").

Why not cleanlab: it implements this method, but it is licensed AGPL-3.0, whose copyleft
(network use included) would extend to anything that ships or serves textclf with it; the
method fits in the numpy below. Pure numpy: no model, no files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METHODS = ("noise-rate", "both", "self-confidence")
RANKINGS = ("self-confidence", "margin", "combined")


@dataclass(frozen=True)
class LabelIssues:
    """The suspects of one audit, and the estimates behind them."""
    ranked: np.ndarray             # (K,) example indices, most suspect first
    suggested: np.ndarray          # (N,) per example: its most probable class other than the given
    self_confidence: np.ndarray    # (N,) probability of the given label
    rank_score: np.ndarray         # (N,) what `ranked` orders by, lowest most suspect
    margin: np.ndarray             # (N,) that minus the largest other probability, in [-1, 1]
    thresholds: np.ndarray         # (C,) t_j
    confident_joint: np.ndarray    # (C, C) counts; rows: given label, columns: confident class
    calibrated_joint: np.ndarray   # (C, C) rows summing to each label's count

    @property
    def label_counts(self) -> np.ndarray:
        return self.calibrated_joint.sum(axis=1)

    @property
    def estimated_errors(self) -> float:
        """How many labels the calibrated confident joint estimates are wrong."""
        return float(self.calibrated_joint.sum() - np.trace(self.calibrated_joint))

    def noise_rates(self) -> np.ndarray:
        """(C,) estimated share of the examples labelled i whose true class is another."""
        counts = self.label_counts
        off_diagonal = counts - np.diag(self.calibrated_joint)
        return np.divide(off_diagonal, counts, out=np.zeros_like(counts), where=counts > 0)


def self_confidence(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return probs[np.arange(len(labels)), labels]


def normalized_margin(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """p(given) - max over the other classes: negative where the model prefers another."""
    return self_confidence(probs, labels) - _others(probs, labels).max(axis=1)


def combined_rank(*scores: np.ndarray) -> np.ndarray:
    """The mean of each example's ranks (1 = lowest, ties averaged) by each score: a rank
    average, so scores on different scales weigh alike."""
    from scipy.stats import rankdata

    return np.mean([rankdata(score) for score in scores], axis=0)


def most_probable_other(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return _others(probs, labels).argmax(axis=1)


def _others(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """`probs` with each given label's column at -inf."""
    others = probs.astype(np.float64, copy=True)
    others[np.arange(len(labels)), labels] = -np.inf
    return others


def class_thresholds(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(C,) mean self-confidence per given class; +inf for a class nobody carries (no
    example can then be confidently of it)."""
    classes = probs.shape[1]
    counts = np.bincount(labels, minlength=classes)
    sums = np.bincount(labels, weights=self_confidence(probs, labels), minlength=classes)
    return np.divide(sums, counts, out=np.full(classes, np.inf), where=counts > 0)


def confident_joint(probs: np.ndarray, labels: np.ndarray,
                    thresholds: np.ndarray) -> np.ndarray:
    """(C, C) counts: row = given label, column = the most probable class among those whose
    probability reaches its threshold; an example reaching none is not counted."""
    confident = probs >= thresholds                                   # (N, C)
    counted = confident.any(axis=1)
    true_class = np.where(confident, probs, -np.inf).argmax(axis=1)
    classes = probs.shape[1]
    joint = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(joint, (labels[counted], true_class[counted]), 1)
    return joint


def calibrate_joint(joint: np.ndarray, label_counts: np.ndarray) -> np.ndarray:
    """Each row rescaled to sum to its label's count (rows with no count stay zero)."""
    rows = joint.sum(axis=1, keepdims=True).astype(np.float64)
    return np.divide(joint * label_counts[:, None], rows, out=np.zeros(joint.shape),
                     where=rows > 0)


def prune_by_noise_rate(probs: np.ndarray, labels: np.ndarray,
                        calibrated: np.ndarray) -> np.ndarray:
    """(N,) mask: for each cell (i, j), i != j, the round(calibrated[i, j]) examples labelled
    i with the largest margin p_j - p_i."""
    flagged = np.zeros(len(labels), dtype=bool)
    for given, true_class in zip(*np.nonzero(~np.eye(len(calibrated), dtype=bool))):
        count = int(np.rint(calibrated[given, true_class]))
        if count == 0:
            continue
        rows = np.flatnonzero(labels == given)
        margin = probs[rows, true_class] - probs[rows, given]
        flagged[rows[np.argsort(-margin, kind="stable")[:count]]] = True
    return flagged


def prune_by_class(probs: np.ndarray, labels: np.ndarray,
                   calibrated: np.ndarray) -> np.ndarray:
    """(N,) mask: for each class i, its round(off-diagonal row sum) least self-confident
    examples."""
    flagged = np.zeros(len(labels), dtype=bool)
    confidence = self_confidence(probs, labels)
    for given, row in enumerate(calibrated):
        count = int(np.rint(row.sum() - row[given]))
        rows = np.flatnonzero(labels == given)
        flagged[rows[np.argsort(confidence[rows], kind="stable")[:count]]] = True
    return flagged


def find_label_issues(probs: np.ndarray, labels: np.ndarray, method: str = "noise-rate",
                      rank_by: str = "self-confidence",
                      training_margin: np.ndarray | None = None) -> LabelIssues:
    """Suspects among `labels` (N,) given out-of-sample `probs` (N, C), by `method` (one of
    METHODS), ranked by `rank_by` (one of RANKINGS), most suspect first; `combined` needs
    each example's `training_margin` (N,)."""
    probs, labels = _checked(probs, labels)
    if method not in METHODS or rank_by not in RANKINGS:
        raise ValueError(f"method must be one of {METHODS} and rank_by one of {RANKINGS}, "
                         f"found {method!r} and {rank_by!r}")
    if rank_by == "combined" and (training_margin is None
                                  or np.shape(training_margin) != labels.shape):
        raise ValueError(f"rank_by 'combined' needs a training margin per example "
                         f"({labels.shape}), found {np.shape(training_margin)}")
    thresholds = class_thresholds(probs, labels)
    joint = confident_joint(probs, labels, thresholds)
    calibrated = calibrate_joint(joint, np.bincount(labels, minlength=probs.shape[1]))
    confidence = self_confidence(probs, labels)
    margin = normalized_margin(probs, labels)
    if method == "self-confidence":
        estimated = int(np.rint(calibrated.sum() - np.trace(calibrated)))
        flagged = np.zeros(len(labels), dtype=bool)
        flagged[np.argsort(confidence, kind="stable")[:estimated]] = True
    else:
        flagged = prune_by_noise_rate(probs, labels, calibrated)
        if method == "both":
            flagged &= prune_by_class(probs, labels, calibrated)
        flagged &= probs.argmax(axis=1) != labels
    score = (combined_rank(confidence, np.asarray(training_margin, dtype=np.float64))
             if rank_by == "combined" else
             {"self-confidence": confidence, "margin": margin}[rank_by])
    suspects = np.flatnonzero(flagged)
    return LabelIssues(ranked=suspects[np.argsort(score[suspects], kind="stable")],
                       suggested=most_probable_other(probs, labels),
                       self_confidence=confidence, rank_score=score, margin=margin,
                       thresholds=thresholds, confident_joint=joint,
                       calibrated_joint=calibrated)


def _checked(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    if probs.ndim != 2 or probs.shape[1] < 2 or len(probs) != len(labels):
        raise ValueError(f"expected probabilities (N, C >= 2) and N labels, found "
                         f"{probs.shape} and {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or (
            len(labels) and (labels.min() < 0 or labels.max() >= probs.shape[1])):
        raise ValueError(f"expected label ids from 0 to {probs.shape[1] - 1}")
    return probs, labels.astype(np.int64)
