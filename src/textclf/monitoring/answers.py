"""What `textclf serve` answered, read back from its prediction log, and the labels people
sent back, joined to it.

The feedback log sits in the prediction log's folder, in `feedback/`: JSON Lines files
`feedback-YYYY-MM-DD[-N].jsonl` (UTC day of receipt, rolled as the prediction log is;
written by textclf.serving.feedback), one line per label:

    time        ISO-8601 UTC time the label was received
    request_id  the `id` of the answer the label is for (the prediction log's `request_id`)
    index       the text's position in that request, from 0
    label       the true label
    source      "api" (POST /feedback) or "import:<file name>" (`textclf feedback import`)

The join: a label belongs to the logged request with its `request_id` answered last at
or before the label arrived (clients may reuse an id; if none was answered before, the
first one), and to that request's text number `index`. When several labels name the
same text, the last one written wins: a correction replaces the earlier label. Labels
whose request is not in the prediction log (deleted, or a log folder from elsewhere),
whose index is out of range or whose label the answering model lacks are counted as
unmatched and left out.

Damaged lines of either log (a write cut short: textclf.monitoring.log_reading) are skipped
and counted. A damaged prediction line keeps its place in its request, so the texts after it
keep their index; a label for the text it held is left out as unmatched.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

from textclf.errors import UserError
from textclf.monitoring.inputs import log_record, parse_time
from textclf.monitoring.log_reading import (RECORD_START, DamagedLines, LogLine, cut_or_glued,
                                            json_record, log_files, read_lines)

FEEDBACK_FOLDER = "feedback"        # inside the prediction log folder
# The prediction log writes `{"time": "...", "request_id": "...", ...` (json.dumps keeps
# this order): reading these two fields without parsing the line keeps scans cheap.
_HEAD = re.compile(rb'\{"time": "([^"\\]*)", "request_id": "([^"\\]*(?:\\.[^"\\]*)*)"')


@dataclass(frozen=True)
class LoggedText:
    """One text of a logged request: what the model answered."""
    request_id: str
    index: int
    time: dt.datetime
    model_version: str
    text: str
    predicted: str
    labels: tuple[str, ...]             # the answering model's classes
    damaged: bool = False               # its log line is damaged: no text, label or classes


@dataclass(frozen=True)
class Feedback:
    """One line of the feedback log."""
    time: dt.datetime
    request_id: str
    index: int
    label: str
    source: str


@dataclass(frozen=True)
class Labelled:
    prediction: LoggedText
    label: str
    source: str


@dataclass(frozen=True)
class Joined:
    labelled: tuple[Labelled, ...]      # one per labelled text, in order of the last label
    received: int                       # feedback lines read
    replaced: int                       # labels a later one for the same text replaced
    unmatched: dict[str, int]           # reason -> labels left out


# Reading the logs ---------------------------------------------------------------------

def _head(line: bytes, where: LogLine, damaged: DamagedLines) -> Optional[tuple[str, str]]:
    """(time as written, request_id) of a prediction log line. A damaged line (counted)
    takes the head of the record it ends with: a glued line's whole record began its
    request. None for a damaged line without one."""
    start = line.rfind(RECORD_START)
    if (start != 0 or not line.endswith(b"}")) and (problem := cut_or_glued(line)):
        damaged.skip(where, problem)
    if found := _HEAD.match(line, max(start, 0)):
        time, request_id = found.groups()
        try:
            return time.decode(), (json.loads(b'"%s"' % request_id) if b"\\" in request_id
                                   else request_id.decode())
        except (UnicodeDecodeError, json.JSONDecodeError):
            pass
    record = json_record(line, where, damaged)      # another order of the fields, or damage
    if record is None:
        return None
    request_id = record.get("request_id")
    if not isinstance(request_id, str) or not request_id:
        raise UserError(f"{where}: field 'request_id' must be non-empty text, found "
                        f"{request_id!r}")
    return str(record.get("time")), request_id


def scan_predictions(files: Sequence[Path], damaged: Optional[DamagedLines] = None
                     ) -> Iterator[tuple[str, int, LogLine, bytes]]:
    """(request_id, index of the text in its request, where, line) for every line of the
    prediction log `files` (`request_lines` of each). Damaged lines are counted in
    `damaged`."""
    damaged = DamagedLines() if damaged is None else damaged
    yield from request_lines(read_lines(list(files), damaged), damaged)


def request_lines(lines: Iterable[tuple[LogLine, bytes]], damaged: DamagedLines
                  ) -> Iterator[tuple[str, int, LogLine, bytes]]:
    """(request_id, index of the text in its request, where, line) for prediction log
    `lines` of one file. A request's lines are consecutive and share `time` and
    `request_id` (one write); index 0 starts a request. Damaged lines are counted in
    `damaged` and still yielded where they have a request, so that its texts keep their
    index; `logged_text` makes them placeholders."""
    current, index = None, 0
    for where, line in lines:
        key = _head(line, where, damaged)
        if key is None:
            continue
        index = index + 1 if key == current else 0
        current = key
        yield key[1], index, where, line


def request_sizes(scanned: Iterable[tuple[str, int, LogLine, bytes]]
                  ) -> list[tuple[str, int, tuple[str, ...]]]:
    """(request_id, texts, the answering model's classes) per request of
    `scan_predictions` or `request_lines`, in log order; no classes where the request's
    first line is damaged."""
    found: list[tuple[str, int, tuple[str, ...]]] = []
    distinct: dict[tuple[str, ...], tuple[str, ...]] = {}   # one tuple per set of classes
    for request_id, index, _, line in scanned:
        if index == 0:
            classes = _classes(line)
            found.append((request_id, 0, distinct.setdefault(classes, classes)))
        _, texts, classes = found[-1]
        found[-1] = (request_id, texts + 1, classes)
    return found


def _classes(line: bytes) -> tuple[str, ...]:
    """The classes of the model that answered a prediction log line (its probabilities)."""
    try:
        probabilities = json.loads(line).get("probabilities")
    except (ValueError, AttributeError):
        return ()
    return tuple(probabilities) if isinstance(probabilities, dict) else ()


def logged_text(line: bytes, where: LogLine, request_id: str, index: int,
                damaged: Optional[DamagedLines] = None) -> LoggedText:
    """A prediction log line, checked as the drift report checks it; for a damaged line
    (counted in `damaged`), a placeholder with `damaged` set."""
    found = json_record(line, where, DamagedLines() if damaged is None else damaged)
    if found is None:
        return LoggedText(request_id, index, _damaged_time(line), "", "", "", (), damaged=True)
    record = log_record(found, where)
    # the answering model's classes: the keys of the line's `probabilities`
    probabilities = record.probabilities
    if not probabilities:
        raise UserError(f"{where}: field 'probabilities' must map each label to its "
                        f"probability, found {found.get('probabilities')!r:.60}")
    return LoggedText(request_id, index, record.time, record.model_version, record.text,
                      record.label, tuple(probabilities))


def _damaged_time(line: bytes) -> dt.datetime:
    """The time of the record a damaged line ends with (its request's time), else the
    earliest time there is."""
    found = _HEAD.match(line, max(line.rfind(RECORD_START), 0))
    try:
        return parse_time(found.group(1).decode(), "time")
    except (AttributeError, UnicodeDecodeError, UserError):
        return dt.datetime.min.replace(tzinfo=dt.timezone.utc)


def logged_requests(log_dir: str | Path, request_ids: set[str],
                    damaged: Optional[DamagedLines] = None
                    ) -> dict[str, list[list[LoggedText]]]:
    """request_id -> its logged requests (a client may reuse an id), each the list of its
    texts, in log order; only for `request_ids`. Damaged lines are counted in `damaged`."""
    damaged = DamagedLines() if damaged is None else damaged
    found: dict[str, list[list[LoggedText]]] = {}
    for request_id, index, where, line in scan_predictions(log_files(log_dir, "predictions"),
                                                           damaged):
        if request_id in request_ids:
            requests = found.setdefault(request_id, [])
            if index == 0:
                requests.append([])
            requests[-1].append(logged_text(line, where, request_id, index, damaged))
    return found


def answered_request(requests: list[list[LoggedText]], when: dt.datetime) -> list[LoggedText]:
    """The request a label received at `when` is for: the last answered at or before it,
    else the first."""
    before = [r for r in requests if r[0].time <= when]
    return before[-1] if before else requests[0]


def read_feedback(log_dir: str | Path, damaged: Optional[DamagedLines] = None
                  ) -> list[Feedback]:
    """Every line of the feedback log in `log_dir/feedback`, in the order written; damaged
    lines are counted in `damaged`."""
    damaged = DamagedLines() if damaged is None else damaged
    files = log_files(Path(log_dir) / FEEDBACK_FOLDER, "feedback")
    return [_feedback(record, where) for where, line in read_lines(files, damaged)
            if (record := json_record(line, where, damaged)) is not None]


def _feedback(record: dict, where: LogLine) -> Feedback:
    for name in ("request_id", "label", "source"):
        if not isinstance(record.get(name), str) or not record[name]:
            raise UserError(f"{where}: field {name!r} must be non-empty text, found "
                            f"{record.get(name)!r:.60}")
    index = record.get("index")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise UserError(f"{where}: field 'index' must be a whole number >= 0, found "
                        f"{index!r:.60}")
    return Feedback(parse_time(record.get("time"), f"{where}: field 'time'"),
                    record["request_id"], index, record["label"], record["source"])


# The join -----------------------------------------------------------------------------

def join(feedback: Sequence[Feedback], requests: dict[str, list[list[LoggedText]]]) -> Joined:
    """Labels matched to logged texts; the last label of a text wins."""
    latest: dict[tuple, Labelled] = {}
    unmatched: Counter = Counter()
    replaced = 0
    for item in feedback:
        answered = requests.get(item.request_id)
        if not answered:
            unmatched["request not in the prediction log"] += 1
            continue
        texts = answered_request(answered, item.time)
        if not 0 <= item.index < len(texts):
            unmatched["index out of range"] += 1
            continue
        text = texts[item.index]
        if text.damaged:
            unmatched["text's log line damaged"] += 1
            continue
        if item.label not in text.labels:
            unmatched["label unknown to the model"] += 1
            continue
        key = (item.request_id, text.time, item.index)
        replaced += latest.pop(key, None) is not None
        latest[key] = Labelled(text, item.label, item.source)
    return Joined(tuple(latest.values()), len(feedback), replaced, dict(unmatched))


TAIL_BYTES = 1 << 20        # where the last answer of a log file is looked for first


def answering_version(log_dir: str | Path) -> Optional[str]:
    """The model_version of the last answer in the prediction log of `log_dir` (its newest
    file's last whole record), None when there is none."""
    for path in reversed(log_files(log_dir, "predictions")):
        with open(path, "rb") as file:
            size = file.seek(0, 2)
            for start in (max(size - TAIL_BYTES, 0), 0):
                file.seek(start)
                lines = file.read().split(b"\n")[1 if start else 0:]
                for line in reversed(lines):
                    if line.startswith(RECORD_START) and line.endswith(b"}"):
                        try:
                            version = json.loads(line).get("model_version")
                        except ValueError:
                            continue
                        return str(version or "")
                if not start:
                    break
    return None
