"""Labels collected elsewhere, as feedback for logged predictions (`textclf feedback import`).

Accepted files:

- CSV, TSV or JSON Lines with columns `request_id`, `index`, `label` (a label for text
  `index` of the request answered with that `id`), or with `text`, `label` (a label for
  the most recently logged prediction of that text, texts compared as
  textclf.canonical.canonical_text compares them);
- a Label Studio JSON export (`.json`, "JSON" export format): a list of tasks, each
  `{"data": {"text": ...}, "annotations": [{"result": [{"type": "choices", "value":
  {"choices": [LABEL]}}], ...}]}`. Its last annotation that was not cancelled counts; a task
  without one is skipped (not labelled yet). Tasks built from the prediction log may carry
  `data.request_id` and `data.index` instead of matching by text.

Every row is checked against the prediction log before anything is written: an unknown
request or text, an index out of range or a label the answering model lacks is an error
naming file, row and field, and the import writes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from textclf.canonical import canonical_text, normalize_label
from textclf.data.dataset import DataError, check_readable, read_table
from textclf.data.label_studio import read_export
from textclf.errors import UserError
from textclf.monitoring.answers import (LoggedText, answered_request, logged_requests,
                                        logged_text, scan_predictions)
from textclf.monitoring.log_reading import log_files
from textclf.serving.feedback import FeedbackItem

ERRORS_SHOWN = 20


@dataclass(frozen=True)
class LabelRow:
    """One label of an import file, before it is matched to the log."""
    where: str                          # "FILE, row 3" or "FILE, task 2 (id 17)"
    label: str
    request_id: Optional[str] = None
    index: Optional[int] = None
    text: Optional[str] = None
    said_text: Optional[str] = None     # the file's text beside request_id and index


class RowError(ValueError):
    """A row that cannot be imported; the message names file, row and field."""


def read_label_file(path: str | Path) -> tuple[list[LabelRow], list[str], int]:
    """(rows, errors, tasks skipped as not yet labelled) of a label file."""
    path = Path(path)
    check_readable(path)
    if path.suffix.lower() == ".json":
        return _label_studio(path)
    frame = read_table(path, [])
    columns = set(frame.columns)
    if {"request_id", "index", "label"} <= columns:
        keys = ("request_id", "index", *(("text",) if "text" in columns else ()))
    elif {"text", "label"} <= columns:
        keys = ("text",)
    else:
        raise UserError(f"{path}: expected columns request_id, index, label or text, label; "
                        f"found {', '.join(map(str, frame.columns))}")
    rows, errors = [], []
    for number, record in enumerate(frame[[*keys, "label"]].to_dict("records"), start=1):
        try:
            rows.append(_row(f"{path}, row {number}", record))
        except RowError as err:
            errors.append(str(err))
    return rows, errors, 0


def _row(where: str, record: dict) -> LabelRow:
    label = record.get("label")
    if isinstance(label, bool) or not isinstance(label, (str, int)) or not normalize_label(label):
        raise RowError(f"{where}, field 'label': expected a label name, found {label!r:.60}")
    if "text" in record and "request_id" not in record:
        text = record["text"]
        if not isinstance(text, str) or not text.strip():
            raise RowError(f"{where}, field 'text': expected non-empty text, found "
                           f"{text!r:.60}")
        return LabelRow(where, normalize_label(label), text=text)
    request_id, index = record.get("request_id"), record.get("index")
    if not isinstance(request_id, str) or not request_id:
        raise RowError(f"{where}, field 'request_id': expected the `id` of an answer, "
                       f"found {request_id!r:.60}")
    if isinstance(index, str) and index.strip().isascii() and index.strip().isdigit():
        index = int(index)
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise RowError(f"{where}, field 'index': expected a whole number >= 0, found "
                       f"{index!r:.60}")
    said = record.get("text")
    return LabelRow(where, normalize_label(label), request_id=request_id, index=index,
                    said_text=said if isinstance(said, str) and said.strip() else None)


def _label_studio(path: Path) -> tuple[list[LabelRow], list[str], int]:
    """A Label Studio export (textclf.data.label_studio reads it): a task with
    `data.request_id` and `data.index` (tasks `textclf select` made from the log) matches
    that answer, any other matches by its text."""
    try:
        export = read_export(path)
    except DataError as err:
        raise UserError(str(err)) from None
    rows = [LabelRow(row.where, row.label, request_id=row.request_id, index=row.index,
                     said_text=row.text)
            if row.request_id is not None and row.index is not None
            else LabelRow(row.where, row.label, text=row.text)
            for row in export.rows]
    return rows, [], export.unlabelled


def matched_feedback(rows: list[LabelRow], log_dir: str | Path,
                     now: dt.datetime) -> tuple[list[FeedbackItem], list[str]]:
    """(feedback items, errors): each row matched to a logged prediction."""
    by_id = logged_requests(log_dir, {r.request_id for r in rows if r.request_id})
    by_text = latest_by_text(log_dir, {canonical_text(r.text) for r in rows if r.text})
    items, errors = [], []
    for row in rows:
        try:
            text = _logged(row, by_id, by_text, now)
        except RowError as err:
            errors.append(str(err))
            continue
        if row.label not in text.labels:
            errors.append(f"{row.where}, field 'label': unknown label {row.label!r}; expected "
                          f"one of the model's labels: {', '.join(text.labels)}")
            continue
        items.append(FeedbackItem(request_id=text.request_id, index=text.index,
                                  label=row.label))
    return items, errors


def _logged(row: LabelRow, by_id: dict, by_text: dict, now: dt.datetime) -> LoggedText:
    if row.text is not None:
        found = by_text.get(canonical_text(row.text))
        if found is None:
            raise RowError(f"{row.where}, field 'text': no logged prediction has this text "
                           f"({row.text[:40]!r}); expected a text `textclf serve` answered")
        return found
    if row.request_id not in by_id:
        raise RowError(f"{row.where}, field 'request_id': no logged request "
                       f"{row.request_id!r} in the prediction log")
    texts = answered_request(by_id[row.request_id], now)
    _check_one_answer(row, by_id[row.request_id])
    if row.index >= len(texts):
        raise RowError(f"{row.where}, field 'index': {row.index} is out of range; request "
                       f"{row.request_id!r} had {len(texts)} texts (index 0 to "
                       f"{len(texts) - 1})")
    if texts[row.index].damaged:
        raise RowError(f"{row.where}: the prediction log line of text {row.index} of request "
                       f"{row.request_id!r} is damaged (a write cut short), so its text and "
                       f"answer are lost; this label cannot be matched")
    logged = texts[row.index]
    if row.said_text is not None and canonical_text(row.said_text) != canonical_text(logged.text):
        raise RowError(f"{row.where}, field 'text': {row.said_text[:40]!r} is not text "
                       f"{row.index} of request {row.request_id!r}, which was "
                       f"{logged.text[:40]!r}; expected the row's text to be the one answered "
                       f"(an id used for several requests: import by text, columns text, "
                       f"label)")
    return logged


def _check_one_answer(row: LabelRow, requests: list[list[LoggedText]]) -> None:
    """Refuse an id answered more than once with different texts at the row's index:
    a file's label, unlike one sent to POST /feedback soon after the answer, does not
    say which of them it is for (clients may reuse ids)."""
    texts = {canonical_text(r[row.index].text) for r in requests
             if row.index < len(r) and not r[row.index].damaged}
    if len(texts) > 1 and row.said_text is None:
        raise RowError(f"{row.where}, field 'request_id': {row.request_id!r} was answered "
                       f"{len(requests)} times with different texts at index {row.index}, "
                       f"so the id does not say which one this label is for; expected a "
                       f"unique id, or the text (columns text, label)")


def latest_by_text(log_dir: str | Path, texts: set[str]) -> dict[str, LoggedText]:
    """canonical text -> its most recently logged prediction, for `texts` (canonical)."""
    found: dict[str, LoggedText] = {}
    if not texts:
        return found
    for request_id, index, where, line in scan_predictions(log_files(log_dir, "predictions")):
        try:
            text = json.loads(line).get("text")
        except (ValueError, AttributeError):
            text = None       # logged_text names what is wrong with the line
        if not isinstance(text, str) or canonical_text(text) in texts:
            record = logged_text(line, where, request_id, index)
            found[canonical_text(record.text)] = record
    return found


def report_errors(path: str | Path, errors: list[str]) -> UserError:
    """One error for a file with bad rows: a line per row (the first ERRORS_SHOWN)."""
    more = len(errors) - ERRORS_SHOWN
    lines = errors[:ERRORS_SHOWN] + ([f"... and {more} more"] if more > 0 else [])
    return UserError(f"{path}: {len(errors)} bad row{'s' * (len(errors) > 1)}, nothing "
                     f"imported:\n  " + "\n  ".join(lines))
