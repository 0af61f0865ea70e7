"""What the drift report reads: text files and `textclf serve` prediction logs, as predictions.

A serve log folder holds JSON Lines files `predictions-YYYY-MM-DD[-N].jsonl`, one line per
text: `time`, `request_id`, `model_version`, `text`, `label`, `probability`, `probabilities`.
Damaged lines (a write cut short) are skipped and counted (textclf.monitoring.log_reading).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from textclf.canonical import canonical_text, normalize_label
from textclf.data.dataset import DataError, read_table
from textclf.errors import UserError
from textclf.monitoring.log_reading import (DamagedLines, LogLine, json_record,
                                            prediction_logs, read_lines)



@dataclass(frozen=True)
class Predictions:
    """Texts with the label a model gave each and that label's probability; where known,
    every class's probability (N, C), in the model's label order."""
    texts: tuple[str, ...]
    labels: tuple[str, ...]
    top_probability: tuple[float, ...]
    probabilities: Optional[np.ndarray] = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class LogRecord:
    """One line of a prediction log, the fields the drift report uses."""
    time: dt.datetime
    model_version: str
    text: str
    label: str
    probability: float
    probabilities: Optional[dict[str, float]] = None     # every class's, as served
    calibrated: Optional[bool] = None   # the server said whether they are (older logs: not)


@dataclass(frozen=True)
class LoggedWindow:
    """The texts a served model saw, as its prediction log recorded them."""
    predictions: Predictions
    model_versions: tuple[str, ...]     # distinct versions in the log, in order of appearance
    files: int
    first: dt.datetime
    last: dt.datetime
    probabilities: tuple[Optional[dict[str, float]], ...] = ()   # per record, as logged
    calibrated: tuple[bool, ...] = ()   # the distinct `calibrated` values the records state

    def probability_matrix(self, labels: Sequence[str]) -> Optional[np.ndarray]:
        """(N, C) logged probabilities in the order of `labels`, or None where a record
        lacks one of them (an older log, another model's labels)."""
        if not self.probabilities or any(p is None or set(p) != set(labels)
                                         for p in self.probabilities):
            return None
        return np.array([[p[label] for label in labels] for p in self.probabilities])


def read_texts(path: str | Path, column: str, flag: str) -> list[str]:
    """The non-empty texts of a CSV, TSV, JSON Lines or Parquet file; `flag` names the
    command-line option in messages."""
    try:
        frame = read_table(path, [column])
    except DataError as err:
        raise DataError(f"{flag} {err}") from None
    if frame.empty:
        raise DataError(f"{flag} {path}: the file has no rows; expected at least one text")
    texts = frame[column]
    # What `predict` refuses: a model would answer an invisible text with a confident guess.
    bad = ~texts.map(lambda v: isinstance(v, str) and bool(canonical_text(v)))
    if bad.any():
        row = int(bad.idxmax())
        raise DataError(f"{flag} {path}: column {column!r}, row {row + 1}: expected text, "
                        f"found {texts.iloc[row]!r}: empty, whitespace-only or invisible-only "
                        f"({int(bad.sum())} such rows)")
    return texts.tolist()


def read_labels(path: str | Path, count: int, column: str = "label") -> Optional[list[str]]:
    """The gold labels of a split read with `read_texts` (same rows, in order), or None
    when the file has no `column`: its scores are then not shown."""
    frame = read_table(path, [])
    if column not in frame.columns:
        return None
    if len(frame) != count:
        raise DataError(f"{path}: {len(frame)} rows with labels, {count} texts")
    return [normalize_label(label) or "" for label in frame[column]]


def read_prediction_logs(folder: str | Path, since: dt.datetime | None = None,
                         damaged: DamagedLines | None = None) -> LoggedWindow:
    """Every record of the prediction log files in `folder` (answered at or after `since`);
    damaged lines are counted in `damaged` (refused if it is strict)."""
    folder = Path(folder)
    damaged = DamagedLines() if damaged is None else damaged
    files = prediction_logs(folder, "--current")
    records = [log_record(found, where) for where, line in read_lines(files, damaged)
               if (found := json_record(line, where, damaged)) is not None]
    records = [record for record in records if since is None or record.time >= since]
    if not records:
        after = f" answered since {since.isoformat()}" if since else ""
        skipped = f" ({damaged.count} damaged lines skipped)" if damaged.count else ""
        raise UserError(f"--current {folder}: the prediction logs ({len(files)} files) hold no "
                        f"predictions{after}{skipped}; expected at least one logged text")
    times = [record.time.astimezone(dt.timezone.utc) for record in records]
    return LoggedWindow(
        Predictions(tuple(r.text for r in records), tuple(r.label for r in records),
                    tuple(r.probability for r in records)),
        tuple(dict.fromkeys(r.model_version for r in records if r.model_version)),
        len(files), min(times), max(times), tuple(r.probabilities for r in records),
        tuple(sorted({r.calibrated for r in records if r.calibrated is not None})))


def log_record(record: dict, where: LogLine | str) -> LogRecord:
    """The fields of one prediction log record, checked; a wrong one is refused."""
    text, label, top = record.get("text"), record.get("label"), record.get("probability")
    if not isinstance(text, str) or not text.strip():
        raise UserError(f"{where}: field 'text' must be non-empty text, found {text!r}")
    if not isinstance(label, str) or not label:
        raise UserError(f"{where}: field 'label' must be a label name, found {label!r}")
    if (not isinstance(top, (int, float)) or isinstance(top, bool)
            or not math.isfinite(top) or not 0 <= top <= 1):
        raise UserError(f"{where}: field 'probability' must be a number from 0 to 1, "
                        f"found {top!r}")
    probabilities = _class_probabilities(record.get("probabilities"))
    if probabilities is not None and label not in probabilities:
        raise UserError(f"{where}: field 'label' {label!r:.60} is none of the labels of the "
                        f"line's own probabilities ({', '.join(probabilities)[:200]}); expected "
                        f"a line `textclf serve` wrote")
    return LogRecord(parse_time(record.get("time"), f"{where}: field 'time'"),
                     str(record.get("model_version") or ""), text, label, float(top),
                     probabilities,
                     calibrated if isinstance(calibrated := record.get("calibrated"), bool)
                     else None)


def _class_probabilities(value) -> Optional[dict[str, float]]:
    """The record's {label: probability}, or None when absent or not numbers: it only
    refines the performance estimate (macro-F1), so it is not worth refusing a log for."""
    if not isinstance(value, dict) or not all(
            isinstance(p, (int, float)) and not isinstance(p, bool) and math.isfinite(p)
            for p in value.values()):
        return None
    return {str(label): float(p) for label, p in value.items()}


def parse_time(value, what: str) -> dt.datetime:
    """An ISO-8601 time; one without a zone is taken as UTC (the log writes UTC)."""
    try:
        parsed = dt.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise UserError(f"{what} must be an ISO-8601 time such as 2026-11-28 or "
                        f"2026-11-28T21:30:05+00:00, found {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def label_texts(labeller, texts: Sequence[str]) -> Predictions:
    """`texts` with the label a textclf.model.labeller.Labeller gives each, and its probability."""
    from textclf.model.labeller import top_labels       # torch: imported when labelling

    probs = labeller.probabilities(texts)    # (N, C)
    labels, top = top_labels(probs, labeller.labels)
    return Predictions(tuple(texts), tuple(labels), tuple(float(p) for p in top), probs)
