"""Is the model still good? Live accuracy per model version, from the labels people sent
back joined to what `textclf serve` answered (textclf.monitoring.answers): accuracy with a
95% Wilson interval, macro-F1 with a 95% percentile-bootstrap interval, recall per class,
beside the test scores; and the page that shows them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from textclf.errors import UserError
from textclf.metrics import macro_f1
from textclf.monitoring.answers import (Joined, Labelled, answering_version, join,
                                        logged_requests, read_feedback)
from textclf.monitoring.log_reading import DamagedLines
from textclf.reporting.pages import md_table, md_text

Z95 = 1.959963984540054             # the normal quantile of a two-sided 95% interval
MIN_LABELS = 30                     # below this an interval is too wide to call a drop
RESAMPLES = 1000                    # bootstrap resamples of the macro-F1 interval
EXAMPLES = 10                       # disagreements shown on the page
EXAMPLE_CHARS = 200
WORSE, NO_DROP, TOO_FEW = "worse than test", "no evidence of a drop", "too few labels"


# The scores ---------------------------------------------------------------------------

def wilson_interval(hits: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of the proportion hits / n (Wilson 1927); (0, 1) for n = 0."""
    if n == 0:
        return 0.0, 1.0
    p, z2 = hits / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # exact ends where rounding would leave 0.9999999999999999
    return (0.0 if hits == 0 else centre - half), (1.0 if hits == n else centre + half)


def bootstrap_macro_f1(true: np.ndarray, pred: np.ndarray, classes: int, seed: int,
                       resamples: int = RESAMPLES) -> tuple[float, float]:
    """95% percentile-bootstrap interval of macro-F1 (as textclf.metrics.macro_f1: zero
    where undefined, averaged over all `classes`) for label ids `true`, `pred` (N,)."""
    rng = np.random.default_rng(seed)
    n, scores = len(true), []
    chunk = max(1, 2**20 // max(n, 1))     # resamples per step: about 1M ids in memory
    for start in range(0, resamples, chunk):
        b = min(chunk, resamples - start)
        rows = rng.integers(0, n, size=(b, n))
        offset = np.arange(b)[:, None] * classes
        t, p = true[rows] + offset, pred[rows] + offset      # (b, n), one id range per row
        count = b * classes
        hits = np.bincount(t[t == p], minlength=count)
        both = np.bincount(t.ravel(), minlength=count) + np.bincount(p.ravel(), minlength=count)
        f1 = np.divide(2 * hits, both, out=np.zeros(count), where=both > 0)
        scores.append(f1.reshape(b, classes).mean(axis=1))
    low, high = np.percentile(np.concatenate(scores), [2.5, 97.5])
    return float(low), float(high)


@dataclass(frozen=True)
class VersionStats:
    model_version: str
    labelled: int
    accuracy: float
    accuracy_interval: tuple[float, float]
    macro_f1: float
    macro_f1_interval: tuple[float, float]
    recall: dict[str, tuple[float, int]]     # class -> (recall, labelled texts of it)
    verdict: str
    last_answered: dt.datetime


def version_stats(items: Sequence[Labelled], test_accuracy: float, min_labels: int,
                  seed: int, resamples: int = RESAMPLES) -> VersionStats:
    """The scores of one model version's labelled texts, and its verdict."""
    classes = list(dict.fromkeys([c for item in items for c in item.prediction.labels] +
                                 [item.prediction.predicted for item in items]))
    ids = {c: i for i, c in enumerate(classes)}
    true = np.array([ids[item.label] for item in items])
    pred = np.array([ids[item.prediction.predicted] for item in items])
    hits = int((true == pred).sum())
    low, high = wilson_interval(hits, len(items))
    verdict = (TOO_FEW if len(items) < min_labels else WORSE if high < test_accuracy
               else NO_DROP)
    support = np.bincount(true, minlength=len(classes))
    right = np.bincount(true[true == pred], minlength=len(classes))
    return VersionStats(
        items[0].prediction.model_version, len(items), hits / len(items), (low, high),
        macro_f1([i.label for i in items], [i.prediction.predicted for i in items], classes),
        bootstrap_macro_f1(true, pred, len(classes), seed, resamples),
        {c: (float(right[i] / support[i]) if support[i] else math.nan, int(support[i]))
         for i, c in enumerate(classes)},
        verdict, max(item.prediction.time for item in items))


@dataclass(frozen=True)
class LiveSummary:
    """Live accuracy per model version; `current` is the version answered last."""
    versions: tuple[VersionStats, ...]       # most recently answered first
    test_accuracy: float
    test_source: str
    received: int
    replaced: int
    unmatched: dict[str, int]
    min_labels: int
    disagreements: tuple[Labelled, ...] = field(default=())
    damaged_lines: int = 0                   # of either log, skipped
    answering: Optional[str] = None          # the version of the log's last answer

    @property
    def current(self) -> Optional[VersionStats]:
        """The version answering now (the log's last answer), None while it has no labels;
        without a log to tell, the labelled version answered last."""
        if self.answering is None:
            return self.versions[0] if self.versions else None
        return next((v for v in self.versions if v.model_version == self.answering), None)

    @property
    def verdict(self) -> str:
        return self.current.verdict if self.current else TOO_FEW

    @property
    def worse(self) -> bool:
        return self.verdict == WORSE

    def metrics(self) -> dict:
        """The numbers `dvc metrics show` lists (0/1 for yes/no, every value a number)."""
        versions = {short_version(v.model_version): _version_metrics(v) for v in self.versions}
        return {"worse_than_test": int(self.worse), "test_accuracy": self.test_accuracy,
                "labels": {"received": self.received, "replaced": self.replaced,
                           "unmatched": sum(self.unmatched.values())},
                "damaged_log_lines": self.damaged_lines,
                **({"current": _version_metrics(self.current)} if self.current else {}),
                "versions": versions}

    def to_markdown(self, level: int = 1) -> str:
        """The page; `level` is its heading's level (2 to sit inside another report)."""
        return to_markdown(self, level)


def summarise(joined: Joined, test_accuracy: float, test_source: str = "",
              min_labels: int = MIN_LABELS, seed: int = 0,
              resamples: int = RESAMPLES) -> LiveSummary:
    by_version: dict[str, list[Labelled]] = {}
    for item in joined.labelled:
        by_version.setdefault(item.prediction.model_version, []).append(item)
    versions = sorted((version_stats(items, test_accuracy, min_labels, seed, resamples)
                       for items in by_version.values()),
                      key=lambda v: v.last_answered, reverse=True)
    wrong = [i for i in joined.labelled if i.label != i.prediction.predicted]
    return LiveSummary(tuple(versions), test_accuracy, test_source, joined.received,
                       joined.replaced, joined.unmatched, min_labels,
                       tuple(sorted(wrong, key=lambda i: i.prediction.time)[-EXAMPLES:]))


def live_summary(log_dir: str | Path, test_accuracy: float, test_source: str = "",
                 min_labels: int = MIN_LABELS, seed: int = 0,
                 damaged: Optional[DamagedLines] = None) -> LiveSummary:
    """Read the prediction and feedback logs of `log_dir` and score them (the drift
    report can call this and show `.to_markdown(level=2)`); damaged lines are counted in
    `damaged` (refused if it is strict)."""
    if not Path(log_dir).is_dir():
        raise UserError(f"--log-dir {log_dir}: no such folder; expected the --log-dir of "
                        f"`textclf serve`")
    damaged = DamagedLines() if damaged is None else damaged
    feedback = read_feedback(log_dir, damaged)
    requests = logged_requests(log_dir, {f.request_id for f in feedback}, damaged)
    summary = summarise(join(feedback, requests), test_accuracy, test_source, min_labels, seed)
    return dataclasses.replace(summary, damaged_lines=damaged.count,
                               answering=answering_version(log_dir))


def read_test_accuracy(path: str | Path) -> float:
    """`accuracy` of an evaluate metrics file (metrics/evaluate/metrics.json)."""
    if not Path(path).is_file():
        raise UserError(f"--test-metrics {path}: no such file; expected the test metrics "
                        f"`textclf evaluate` writes (run `dvc repro`)")
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8")).get("accuracy")
    except (OSError, ValueError, AttributeError) as err:
        raise UserError(f"--test-metrics {path}: cannot read a JSON object ({err}); "
                        f"expected the metrics `textclf evaluate` writes") from None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
        raise UserError(f"--test-metrics {path}: field 'accuracy' must be a number from 0 "
                        f"to 1, found {value!r}")
    return float(value)


# The page ----------------------------------------------------------------------------

def short_version(version: str) -> str:
    """sha256 digests cut to 12 hex digits, git commits to 8, for people and metric keys."""
    version = re.sub(r"\b(sha256:[0-9a-f]{12})[0-9a-f]{52}\b", r"\1", version)
    return re.sub(r"\b(git:[0-9a-f]{8})[0-9a-f]{32}\b", r"\1", version) or "(none)"


def _interval(value: float, interval: tuple[float, float]) -> str:
    return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"


def _version_metrics(v: VersionStats) -> dict:
    return {"labelled": v.labelled, "accuracy": round(v.accuracy, 4),
            "accuracy_low": round(v.accuracy_interval[0], 4),
            "accuracy_high": round(v.accuracy_interval[1], 4),
            "macro_f1": round(v.macro_f1, 4), "macro_f1_low": round(v.macro_f1_interval[0], 4),
            "macro_f1_high": round(v.macro_f1_interval[1], 4),
            "worse_than_test": int(v.verdict == WORSE),
            "too_few_labels": int(v.verdict == TOO_FEW),
            "recall": {c: round(r, 4) for c, (r, n) in v.recall.items() if n}}


def _headline(s: LiveSummary) -> str:
    c = s.current
    if c is None and s.versions:
        return (f"**{TOO_FEW}**: model {md_text(short_version(s.answering or ''))} answers "
                f"now and none of its answers has a label yet; earlier versions are below.")
    if c is None:
        return (f"**{TOO_FEW}**: no label matches a logged prediction yet "
                f"({s.received} received).")
    test = f"the test accuracy {s.test_accuracy:.3f}" + (
        f" ({md_text(s.test_source)})" if s.test_source else "")
    detail = {WORSE: f"the whole interval lies below {test}",
              NO_DROP: f"{test} is not above the interval",
              TOO_FEW: f"a verdict needs {s.min_labels} (--min-labels), to compare with "
                       f"{test}"}[c.verdict]
    return (f"**{c.verdict}**: model {md_text(short_version(c.model_version))}, accuracy "
            f"{_interval(c.accuracy, c.accuracy_interval)} (95% Wilson) on {c.labelled} "
            f"labelled texts; {detail}.")


def to_markdown(s: LiveSummary, level: int = 1) -> str:
    h = "#" * level
    unmatched = "; ".join(f"{n} {reason}" for reason, n in s.unmatched.items()) or "none"
    damaged = (f" {s.damaged_lines} damaged log line{'s' * (s.damaged_lines > 1)} skipped "
               f"(a write cut short; `textclf feedback report` names them on stderr)."
               if s.damaged_lines else "")
    md = [f"{h} Live accuracy: {s.verdict}", _headline(s),
          f"Labels: {s.received} received, {s.replaced} replaced by a later label for the "
          f"same text, left out: {md_text(unmatched)}.{damaged}"]
    rows = [[short_version(v.model_version), str(v.labelled),
             _interval(v.accuracy, v.accuracy_interval),
             _interval(v.macro_f1, v.macro_f1_interval), v.verdict] for v in s.versions]
    md += [f"{h}# Per model version (most recent first)",
           md_table(["model version", "labelled", "accuracy [95% Wilson]",
                     "macro-F1 [95% bootstrap]", "verdict"], rows) if rows else "(none)"]
    md.append(HOW_TO_READ)
    if s.current:
        recall = [[c, str(n), f"{r:.3f}" if n else "-"]
                  for c, (r, n) in s.current.recall.items()]
        md += [f"{h}# Recall per class, current version",
               md_table(["class", "labelled", "recall"], recall)]
    examples = [[i.prediction.request_id, str(i.prediction.index), _clip(i.prediction.text),
                 i.prediction.predicted, i.label] for i in reversed(s.disagreements)]
    md += [f"{h}# Latest disagreements",
           md_table(["request", "index", "text", "predicted", "label"], examples)
           if examples else "(none)"]
    return "\n\n".join(md) + "\n"


HOW_TO_READ = (
    "How to read this: each label is joined to the logged prediction it names; the last "
    "label of a text wins. The accuracy interval is where the live accuracy lies with 95% "
    "confidence given this many labels; the verdict is \"worse than test\" only when all "
    "of it lies below the test accuracy. Texts people chose to label are not a random "
    "sample: label a random sample of the log for an unbiased estimate.")


def _clip(text: str) -> str:
    return text if len(text) <= EXAMPLE_CHARS else text[:EXAMPLE_CHARS] + "…"
