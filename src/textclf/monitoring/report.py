"""The drift report as one typed result: measures, verdict and the metrics DVC tracks.

`compare` is pure: texts and predictions in, a `DriftReport` out. The verdict is "drift"
when either of two tests fires: a classifier tells current texts from reference texts,
or the predicted-label distribution moved away from the model's own test split. Each
runs at ALPHA / 2, so unchanged data is flagged at most ALPHA = 5% of the time.
Confidence, length and out-of-vocabulary rate explain a verdict; they do not make one.
Beside it, the window's accuracy and macro-F1 are estimated without labels
(textclf.monitoring.estimate), with the test split's true scores, and marked unreliable
where the domain classifier or the texts' novelty (textclf.monitoring.novelty) says
calibration need not carry over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from textclf.canonical import canonical_text
from textclf.errors import UserError
from textclf.metrics import classification_metrics
from textclf.monitoring.estimate import ATCThreshold, PerformanceEstimate, estimate_performance
from textclf.monitoring.inputs import Predictions
from textclf.monitoring.novelty import NoveltyResult
from textclf.monitoring.stats import (ConfidenceShift, DomainClassifierResult, LabelShift,
                                      TextProfile, confidence_shift, domain_classifier,
                                      label_shift, text_profile, vocabulary_of)

MIN_ROWS = 10              # below this a held-out half has too few texts to score
SMALL_WINDOW = 200         # below this only large changes can be detected: say so


@dataclass(frozen=True)
class Sources:
    """Where each side came from, as the page names them."""
    reference: str
    current: str
    test: str
    model_version: str              # e.g. "sha256:… (the weights in models/classifier)"
    damaged_lines: int = 0          # lines of the --current logs skipped as damaged


@dataclass(frozen=True)
class DriftReport:
    sources: Sources
    reference: TextProfile
    test: TextProfile
    current: TextProfile
    domain: DomainClassifierResult
    labels: LabelShift
    confidence: ConfidenceShift
    notes: tuple[str, ...]          # caveats a reader needs, e.g. a sampled window
    performance: Optional[PerformanceEstimate] = None    # estimated without labels

    @property
    def drifted(self) -> bool:
        return self.domain.drifted or self.labels.drifted

    @property
    def verdict(self) -> str:
        reasons = []
        if self.domain.drifted:
            reasons.append(f"current texts can be told from the reference texts "
                           f"(AUC {self.domain.auc:.3f} > {self.domain.threshold:.3f})")
        if self.labels.drifted:
            reasons.append(f"predicted labels moved from the test split "
                           f"(PSI {self.labels.psi:.3f}, p {format_p(self.labels.p_value)})")
        if reasons:
            return "Drift detected: " + "; ".join(reasons) + "."
        return (f"No drift detected: AUC {self.domain.auc:.3f} <= {self.domain.threshold:.3f} "
                f"and predicted labels steady (PSI {self.labels.psi:.3f}, "
                f"p {format_p(self.labels.p_value)}).")

    def metrics(self) -> dict:
        """The numbers `dvc metrics show` lists (0/1 for yes/no, so every value is a number)."""
        d, labels, c = self.domain, self.labels, self.confidence
        return {
            "drift_detected": int(self.drifted),
            "rows": {"reference": self.reference.rows, "current": self.current.rows,
                     "test": self.test.rows},
            "damaged_log_lines": self.sources.damaged_lines,
            "text_drift": {"detected": int(d.drifted), "auc": round(d.auc, 4),
                           "threshold": round(d.threshold, 4)},
            "label_drift": {"detected": int(labels.drifted), "psi": round(labels.psi, 4),
                            "chi2_p_value": float(f"{labels.p_value:.4g}")},
            "confidence": {"test_mean": round(c.expected_mean, 4),
                           "current_mean": round(c.current_mean, 4),
                           "shift": round(c.shift, 4) + 0.0},     # + 0.0: no "-0.0"
            "text": {"mean_words_reference": round(self.reference.mean_words, 2),
                     "mean_words_current": round(self.current.mean_words, 2),
                     "oov_rate_test": round(self.test.oov_rate, 4),
                     "oov_rate_current": round(self.current.oov_rate, 4)},
            **({"performance": performance_metrics(self.performance)}
               if self.performance else {}),
        }


def performance_metrics(estimate: PerformanceEstimate) -> dict:
    """estimate_reliable (0/1) and which signal made it 0, the window's novelty, its CBPE
    and ATC estimates, the test split's scores; a value that cannot be computed (no
    labels, no validation split) is left out."""
    cur, test = estimate.current, estimate.test
    why, novelty = estimate.reliability, estimate.novelty
    found = {"estimate_reliable": int(estimate.reliable),
             "f1_estimate_reliable": int(estimate.reliability.f1_reliable),
             "unreliable_domain": int(why.domain_fired),
             "unreliable_novelty": int(why.novelty_fired),
             "unreliable_other": int(bool(why.untrusted)),
             "novelty_auc": novelty.auc if novelty else None,
             "novel_share": novelty.novel_share if novelty else None,
             "estimated_accuracy": cur.accuracy, "estimated_accuracy_low": cur.accuracy_low,
             "estimated_accuracy_high": cur.accuracy_high,
             "estimated_f1_macro": cur.f1_macro, "estimated_f1_macro_low": cur.f1_macro_low,
             "estimated_f1_macro_high": cur.f1_macro_high, "atc_accuracy": estimate.current_atc,
             "atc_threshold": estimate.atc.threshold if estimate.atc else None,
             "texts_for_3_points": cur.texts_for(3), "texts_for_5_points": cur.texts_for(5),
             "test_accuracy": estimate.test_accuracy, "test_f1_macro": estimate.test_f1_macro,
             "test_estimated_accuracy": test.accuracy, "test_atc_accuracy": estimate.test_atc}
    return {key: round(value, 4) if isinstance(value, float) else value
            for key, value in found.items() if value is not None}


def format_p(p_value: float) -> str:
    """'= 0.032' or '< 0.001': tiny p-values are all the same to a reader."""
    return "< 0.001" if p_value < 0.001 else f"= {p_value:.2g}"


def sample(texts: Sequence[str], limit: int, seed: int) -> list[str]:
    """At most `limit` texts, drawn without replacement in their original order."""
    if len(texts) <= limit:
        return list(texts)
    keep = np.sort(np.random.default_rng(seed).choice(len(texts), limit, replace=False))
    return [texts[i] for i in keep]


def distinct(texts: Sequence[str]) -> list[str]:
    """`texts` with each text once (the same once normalised, textclf.canonical), in order."""
    first: dict[str, str] = {}
    for text in texts:
        first.setdefault(canonical_text(text), text)
    return list(first.values())


def check_sizes(sources: Sources, reference: int, current: int, test: int) -> None:
    """Each window holds at least MIN_ROWS texts (checked before a model is loaded, too)."""
    for name, source, size in (("--reference", sources.reference, reference),
                               ("--current", sources.current, current),
                               ("--test", sources.test, test)):
        if size < MIN_ROWS:
            raise UserError(f"{name} {source}: {size} text(s); expected at least {MIN_ROWS} "
                            f"to compare (a window that small cannot show drift)")


def compare(reference: Sequence[str], test: Predictions, current: Predictions,
            labels: Sequence[str], sources: Sources, seed: int = 0,
            max_rows: int = 10_000, notes: Sequence[str] = (),
            test_labels: Optional[Sequence[str]] = None,
            atc: Optional[ATCThreshold] = None,
            novelty: Optional[NoveltyResult] = None,
            untrusted: Sequence[str] = ()) -> DriftReport:
    """Everything the report shows; `labels` are the model's, in its label order;
    `test_labels` the test split's gold labels where it has them; `atc` the ATC threshold
    fitted on the validation split; `novelty` the window's against that split;
    `untrusted` what the caller knows makes the estimates unreliable."""
    check_sizes(sources, len(reference), len(current.texts), len(test.texts))
    notes = list(notes)
    # The domain classifier sees each text once: a text sent again (a client's retry)
    # would land in both of its halves, and be "told apart" from the reference by memory.
    distinct_reference, distinct_current = distinct(reference), distinct(current.texts)
    repeats = len(current.texts) - len(distinct_current)
    if repeats:
        notes.append(f"{repeats:,} of the {len(current.texts):,} current texts repeat "
                     f"another ({repeats / len(current.texts):.0%}); the domain classifier "
                     f"saw each text once, the other measures every text as sent.")
    check_sizes(sources, len(distinct_reference), len(distinct_current), len(test.texts))
    for name, texts in (("reference", distinct_reference), ("current", distinct_current)):
        if len(texts) > max_rows:
            notes.append(f"The domain classifier used a random {max_rows:,} of the "
                         f"{len(texts):,} {name} texts (--max-rows).")
    if len(current.texts) < SMALL_WINDOW:
        notes.append(f"The current window has {len(current.texts)} texts: only large "
                     f"changes can be detected; collect more for a sharper test.")
    domain = domain_classifier(sample(distinct_reference, max_rows, seed),
                               sample(distinct_current, max_rows, seed + 1), seed=seed)
    # Out-of-vocabulary against the reference texts' words; the test split, which the
    # model never saw either, shows the rate to expect when nothing has changed.
    vocabulary = vocabulary_of(reference)
    scores = None
    if test_labels is not None:
        found = classification_metrics(list(test_labels), list(test.labels), list(labels))
        scores = found["accuracy"], found["f1_macro"]
    shift = label_shift(test.labels, current.labels, labels)
    performance = estimate_performance(
        np.asarray(current.top_probability), current.probabilities,
        np.asarray(test.top_probability), test.probabilities, domain.auc, atc, scores,
        labels_moved=shift.drifted, seed=seed, novelty=novelty, untrusted=untrusted)
    return DriftReport(
        sources=sources, reference=text_profile(reference, vocabulary),
        test=text_profile(test.texts, vocabulary),
        current=text_profile(current.texts, vocabulary), domain=domain,
        labels=shift,
        confidence=confidence_shift(test.top_probability, current.top_probability),
        notes=tuple(notes), performance=performance)
