"""The statistics of the drift report: pure functions of texts, labels and probabilities.

Nothing here reads files or loads a model, so each measure is tested on its own. The
decision rules and where they come from are written out in docs/drift.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

# Every test of the verdict runs at ALPHA / (number of tests), so that the verdict as a
# whole raises a false alarm at most ALPHA of the time on data that has not changed.
ALPHA = 0.05
VERDICT_TESTS = 2          # the domain classifier and the predicted-label distribution
# Evidently's threshold for its text domain classifier on more than 1,000 rows: below an
# AUC of 0.55 a difference is too small to act on, however significant.
MIN_AUC = 0.55
# The PSI rule of thumb (credit scoring, Siddiqi 2006): < 0.1 no real change,
# 0.1-0.25 a moderate one, > 0.25 a major one.
MIN_PSI = 0.1
PSI_FLOOR = 1e-4           # a share of 0 would make PSI infinite; as in Evidently's psi
PERMUTATIONS = 1000
WORD = re.compile(r"(?u)\b\w\w+\b")   # scikit-learn's default token pattern, lowercased


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


@dataclass(frozen=True)
class DomainClassifierResult:
    """How well TF-IDF + logistic regression tells current texts from reference texts."""
    auc: float                     # ROC AUC on the held-out half; 0.5 = cannot tell
    threshold: float               # max(MIN_AUC, permutation_threshold)
    permutation_threshold: float   # AUC a classifier reaches by chance, 1 - alpha quantile
    heldout_rows: int
    words_current: tuple[tuple[str, float], ...]     # (word, weight), most telling first
    words_reference: tuple[tuple[str, float], ...]
    examples_current: tuple[str, ...]    # held-out current texts the classifier is surest of
    examples_reference: tuple[str, ...]

    @property
    def drifted(self) -> bool:
        return self.auc > self.threshold


def domain_classifier(reference: Sequence[str], current: Sequence[str], seed: int = 0,
                      alpha: float = ALPHA / VERDICT_TESTS, top_words: int = 12,
                      top_examples: int = 5) -> DomainClassifierResult:
    """Train on a stratified half of reference + current, score ROC AUC on the other half."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    texts = np.asarray([*reference, *current], dtype=object)
    is_current = np.r_[np.zeros(len(reference), int), np.ones(len(current), int)]
    if min(len(reference), len(current)) < 2:
        raise ValueError("the domain classifier needs at least 2 texts on each side")
    fit_x, test_x, fit_y, test_y = train_test_split(texts, is_current, test_size=0.5,
                                                    stratify=is_current, random_state=seed)
    vectorizer = TfidfVectorizer(sublinear_tf=True, token_pattern=WORD.pattern)
    try:
        features = vectorizer.fit_transform(fit_x)
    except ValueError:             # no word of two letters in any training text
        return DomainClassifierResult(0.5, MIN_AUC, MIN_AUC, len(test_y), (), (), (), ())
    # Balanced weights: a small current window must not be drowned by a large reference.
    model = LogisticRegression(class_weight="balanced", max_iter=1000, solver="liblinear")
    model.fit(features, fit_y)
    scores = model.predict_proba(vectorizer.transform(test_x))[:, 1]
    auc = float(roc_auc_score(test_y, scores))
    chance = permutation_auc_threshold(scores, test_y, alpha, seed=seed)
    vocabulary = vectorizer.get_feature_names_out()
    weights = model.coef_[0]
    # Stop words count in the classifier but are left out of the lists: "of" and "the"
    # rarely tell a reader what changed.
    shown = [i for i in np.argsort(weights) if vocabulary[i] not in ENGLISH_STOP_WORDS]
    return DomainClassifierResult(
        auc=auc, threshold=max(MIN_AUC, chance), permutation_threshold=chance,
        heldout_rows=len(test_y),
        words_current=tuple((str(vocabulary[i]), float(weights[i]))
                            for i in shown[::-1][:top_words] if weights[i] > 0),
        words_reference=tuple((str(vocabulary[i]), float(-weights[i]))
                              for i in shown[:top_words] if weights[i] < 0),
        examples_current=_surest(test_x, scores, test_y == 1, top_examples, descending=True),
        examples_reference=_surest(test_x, scores, test_y == 0, top_examples, descending=False))


def _surest(texts: np.ndarray, scores: np.ndarray, side: np.ndarray, n: int,
            descending: bool) -> tuple[str, ...]:
    idx = np.flatnonzero(side)
    idx = idx[np.argsort(-scores[idx] if descending else scores[idx], kind="stable")]
    return tuple(dict.fromkeys(str(texts[i]) for i in idx))[:n]


def permutation_auc_threshold(scores: np.ndarray, is_current: np.ndarray, alpha: float,
                              permutations: int = PERMUTATIONS, seed: int = 0) -> float:
    """The 1 - alpha quantile of ROC AUC when the side labels are shuffled.

    Under "nothing changed" a held-out text's side is independent of its score, so
    shuffling the sides samples the AUC's exact null distribution for these scores, ties
    included. Evidently draws random scores instead; without ties the two agree.
    """
    from scipy.stats import rankdata

    ranks = rankdata(scores)                  # (N,), average ranks for ties
    positives = int(is_current.sum())
    negatives = len(scores) - positives
    rng = np.random.default_rng(seed)
    # AUC = Mann-Whitney U / (n1 n0), with U from the rank sum of the positives.
    rank_sums = np.array([ranks[rng.permutation(len(ranks))[:positives]].sum()
                          for _ in range(permutations)])
    aucs = (rank_sums - positives * (positives + 1) / 2) / (positives * negatives)
    return float(np.quantile(aucs, 1 - alpha))


@dataclass(frozen=True)
class LabelShift:
    """Predicted-label distribution of the current window against the model's test split."""
    labels: tuple[str, ...]
    expected_counts: tuple[int, ...]     # the model's predictions on its own test split
    current_counts: tuple[int, ...]
    psi: float
    chi2: float
    p_value: float
    alpha: float

    @property
    def drifted(self) -> bool:
        # Significant (not chance) and large enough to matter (PSI rule of thumb).
        return self.p_value < self.alpha and self.psi >= MIN_PSI


def label_counts(predicted: Sequence[str], labels: Sequence[str]) -> tuple[int, ...]:
    found = dict.fromkeys(labels, 0)
    for label in predicted:
        found[label] = found.get(label, 0) + 1
    return tuple(found.values())


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Population stability index of two count (or share) vectors over the same bins."""
    e, a = (np.asarray(v, dtype=float) for v in (expected, actual))
    if e.sum() <= 0 or a.sum() <= 0:
        raise ValueError("PSI needs at least one count on each side")
    e = np.maximum(e / e.sum(), PSI_FLOOR)
    a = np.maximum(a / a.sum(), PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def chi_squared(expected: Sequence[int], actual: Sequence[int]) -> tuple[float, float]:
    """(statistic, p-value) of the 2 x C contingency test that both samples share one
    distribution; labels absent from both sides carry no information and are dropped."""
    from scipy.stats import chi2_contingency

    table = np.array([expected, actual], dtype=float)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:         # one label only on both sides: nothing can differ
        return 0.0, 1.0
    statistic, p_value, _, _ = chi2_contingency(table, correction=False)
    return float(statistic), float(p_value)


def label_shift(expected_labels: Sequence[str], current_labels: Sequence[str],
                labels: Sequence[str], alpha: float = ALPHA / VERDICT_TESTS) -> LabelShift:
    """Compare predicted labels; labels outside `labels` (say from another model) are added."""
    names = list(dict.fromkeys([*labels, *expected_labels, *current_labels]))
    expected, current = label_counts(expected_labels, names), label_counts(current_labels, names)
    statistic, p_value = chi_squared(expected, current)
    return LabelShift(tuple(names), expected, current, psi(expected, current), statistic,
                      p_value, alpha)


@dataclass(frozen=True)
class TextProfile:
    """Sizes and vocabulary of one set of texts, against the reference vocabulary."""
    rows: int
    mean_words: float
    median_words: float
    oov_rate: float      # share of word tokens never seen in the reference texts


def text_profile(texts: Sequence[str], vocabulary: set[str]) -> TextProfile:
    counts, unseen, total = [], 0, 0
    for text in texts:
        tokens = words(text)
        counts.append(len(tokens))
        unseen += sum(token not in vocabulary for token in tokens)
        total += len(tokens)
    return TextProfile(rows=len(counts), mean_words=float(np.mean(counts)) if counts else 0.0,
                       median_words=float(np.median(counts)) if counts else 0.0,
                       oov_rate=unseen / total if total else 0.0)


def vocabulary_of(texts: Sequence[str]) -> set[str]:
    return {token for text in texts for token in words(text)}


@dataclass(frozen=True)
class ConfidenceShift:
    """Mean top-class probability of the model on its test split and on the current window."""
    expected_mean: float
    current_mean: float
    expected_histogram: tuple[float, ...]    # share of rows per tenth of probability
    current_histogram: tuple[float, ...]

    @property
    def shift(self) -> float:
        return self.current_mean - self.expected_mean


def confidence_shift(expected_top: Sequence[float], current_top: Sequence[float]
                     ) -> ConfidenceShift:
    bins = np.linspace(0.0, 1.0, 11)

    def shares(values: np.ndarray) -> tuple[float, ...]:
        counts, _ = np.histogram(np.clip(values, 0.0, 1.0), bins=bins)
        return tuple(float(c) for c in counts / max(len(values), 1))
    e, c = np.asarray(expected_top, float), np.asarray(current_top, float)
    return ConfidenceShift(float(e.mean()), float(c.mean()), shares(e), shares(c))
