"""Labels for answered texts: what `POST /feedback` accepts, which requests it knows, and
the feedback log it appends to (the schema is in textclf.monitoring.answers, which reads it).

A label names a text by the request's id (`request_id`: the `id` of the answer) and the
text's position in that request (`index`, from 0). The body is one such object or a list
of them; a list is taken whole or refused whole, and written with one append.

Refusals, JSON `{"error": "..."}` naming the field: 400 malformed JSON; 422 a wrong or
missing field, an index out of range, a label the model that answered the request lacks
(the message lists its labels: after a new version is loaded, the old requests keep the
old version's classes); 404 a request id this server has not answered (among the last
`--feedback-window` requests in its prediction log, read back at start-up so a restart
keeps them, and read again from where it left off when an id is not known: another worker
process of `serve --workers N`, which shares the log, may have answered it); 409 when the
server runs with `--no-log` (no prediction log to join labels with); 413 more than
MAX_ITEMS labels in one request. A second label for the same text is accepted and wins
(a correction): the report keeps the last label of each text.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fcntl
import json
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Annotated, Iterator, Optional, TypeVar

from pydantic import (BaseModel, ConfigDict, StrictInt, StrictStr, StringConstraints,
                      ValidationError)

from textclf.canonical import canonical_text
from textclf.errors import UserError
from textclf.monitoring.answers import (FEEDBACK_FOLDER, request_lines, request_sizes,
                                        scan_predictions)
from textclf.monitoring.log_reading import DamagedLines, LogLine, log_files
from textclf.serving.log import DailyLog
from textclf.serving.protocol import MAX_ID_CHARS, ServeError, validation_error

T = TypeVar("T")
MAX_ITEMS = 1000            # labels per POST
DEFAULT_WINDOW = 100_000    # answered requests the server remembers (about 20 MB)


class FeedbackItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request_id: Annotated[StrictStr, StringConstraints(max_length=MAX_ID_CHARS)]
    index: StrictInt
    label: Annotated[StrictStr, StringConstraints(max_length=1000)]


class FeedbackLog(DailyLog):
    """`<log-dir>/feedback/feedback-YYYY-MM-DD[-N].jsonl`, written as the prediction log is."""

    def __init__(self, log_dir: Path, max_bytes: int = 100 * 2**20):
        super().__init__(Path(log_dir) / FEEDBACK_FOLDER, "feedback", max_bytes)


def feedback_lines(time: dt.datetime, items: list[FeedbackItem], source: str) -> bytes:
    """The JSON Lines of one batch of labels, received at `time` from `source`."""
    stamp = time.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds")
    return "".join(json.dumps({"time": stamp, "request_id": item.request_id,
                               "index": item.index, "label": item.label, "source": source},
                              ensure_ascii=False) + "\n" for item in items).encode("utf-8")


class LogTail:
    """The requests appended to a prediction log folder since the last look, by any
    process: (request_id, texts) of whole requests. Reads under a shared `flock`, which
    the writer's exclusive one excludes (textclf.serving.log), so a request being written
    is never read half."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._read: dict[Path, int] = {}        # file -> bytes read, up to a whole line
        self._lock = threading.Lock()           # one reader at a time: the offsets

    def skip_to_end(self) -> None:
        """Count everything the log holds now as read."""
        with self._lock:
            for path in log_files(self.folder, "predictions"):
                self._read[path] = self._size(path)

    def new_requests(self) -> list[tuple[str, int, tuple[str, ...]]]:
        with self._lock:
            found: list[tuple[str, int]] = []
            for path in log_files(self.folder, "predictions"):
                start = self._read.get(path, 0)
                data = self._tail(path, start)
                self._read[path] = start + len(data)
                found += _requests(data, path)
            return found

    @staticmethod
    def _size(path: Path) -> int:
        """Its size while no write is under way: the end of a whole request."""
        try:
            with open(path, "rb") as file:
                fcntl.flock(file, fcntl.LOCK_SH)
                return os.fstat(file.fileno()).st_size
        except FileNotFoundError:
            return 0

    @staticmethod
    def _tail(path: Path, start: int) -> bytes:
        """The whole lines of `path` from byte `start` on."""
        try:
            with open(path, "rb") as file:
                fcntl.flock(file, fcntl.LOCK_SH)
                file.seek(start)
                data = file.read()
        except FileNotFoundError:
            return b""
        return data[:data.rfind(b"\n") + 1]


def _requests(lines: bytes, path: Path) -> list[tuple[str, int, tuple[str, ...]]]:
    """(request_id, texts, classes) per request of whole prediction log `lines` read from `path`,
    grouped as the drift report groups them (textclf.monitoring.answers.request_lines).
    Damaged lines are skipped (the drift report counts them)."""
    numbered = ((LogLine(path, number), line)
                for number, line in enumerate(lines.splitlines(), start=1) if line.strip())
    return request_sizes(_until_refused(request_lines(numbered, DamagedLines())))


def _until_refused(scanned: Iterator[T]) -> Iterator[T]:
    """`scanned` up to a line the readers refuse (another program's record, which
    `textclf serve` never writes): at start-up such a log stops the server with its line
    named (`AnsweredRequests.from_log`); later, it ends the tail instead of failing the
    label being posted."""
    try:
        yield from scanned
    except UserError:
        return


class AnsweredRequests:
    """request_id -> number of texts and the answering model's classes, of the last
    `window` logged requests (a reused id counts as its latest request). Bounded: the
    oldest are forgotten first. `catch_up` adds what other processes logged since (`tail`)."""

    def __init__(self, window: int = DEFAULT_WINDOW, tail: Optional[LogTail] = None):
        self.window = window
        self.tail = tail
        self._sizes: OrderedDict[str, tuple[int, tuple[str, ...]]] = OrderedDict()

    def add(self, request_id: str, texts: int, classes: tuple[str, ...] = ()) -> None:
        self._sizes[request_id] = (texts, classes)
        self._sizes.move_to_end(request_id)
        if len(self._sizes) > self.window:
            self._sizes.popitem(last=False)

    def texts(self, request_id: str) -> Optional[int]:
        found = self._sizes.get(request_id)
        return None if found is None else found[0]

    def classes(self, request_id: str) -> tuple[str, ...]:
        """The classes of the model that answered it (() if the log did not say)."""
        found = self._sizes.get(request_id)
        return () if found is None else found[1]

    def __len__(self) -> int:
        return len(self._sizes)

    async def catch_up(self) -> None:
        """Add the requests logged since the last look (read on a thread: the tail may be
        megabytes when labels come rarely)."""
        if self.tail is not None:
            for request in await asyncio.to_thread(self.tail.new_requests):
                self.add(*request)

    @classmethod
    def from_log(cls, log_dir: Path, window: int = DEFAULT_WINDOW) -> "AnsweredRequests":
        """The last `window` requests of the prediction log in `log_dir`, read newest file
        first until enough are found (a restart keeps accepting their labels)."""
        tail = LogTail(log_dir)
        tail.skip_to_end()      # before reading: a request logged meanwhile is read again
        files: list[list] = []         # per file, newest first: (id, texts, classes)
        found = 0
        for path in reversed(log_files(log_dir, "predictions")):
            requests = request_sizes(scan_predictions([path]))
            files.append(requests)
            found += len(requests)
            if found >= window:
                break
        index = cls(window, tail)
        for request in (r for requests in reversed(files) for r in requests):
            index.add(*request)
        return index


def checked_feedback(body: bytes, answered: AnsweredRequests,
                     labels: tuple[str, ...]) -> list[FeedbackItem]:
    """The labels of a POST /feedback body, or ServeError naming the first bad field."""
    try:
        value = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ServeError(400, f"malformed JSON: {err}") from None
    if isinstance(value, dict):
        items, fields = [value], [""]
    elif isinstance(value, list) and value:
        if len(value) > MAX_ITEMS:
            raise ServeError(413, f"request body: {len(value)} labels, more than the "
                                  f"{MAX_ITEMS} one request may hold; split the request")
        items, fields = value, [f"[{i}]." for i in range(len(value))]
    else:
        raise ServeError(422, f"request body: expected one label {{\"request_id\", "
                              f"\"index\", \"label\"}} or a non-empty list of them, found "
                              f"{json.dumps(value)[:40]}")
    return [_checked_item(item, where, answered, labels) for item, where in zip(items, fields)]


def _checked_item(item, where: str, answered: AnsweredRequests,
                  labels: tuple[str, ...]) -> FeedbackItem:
    try:
        checked = FeedbackItem.model_validate(item)
    except ValidationError as err:
        refusal = validation_error(list(err.errors()))
        if refusal.message.startswith("request body:"):    # the item itself is no object
            raise ServeError(422, f"{where.rstrip('.') or 'request body'}: expected an object "
                                  f"{{\"request_id\", \"index\", \"label\"}}, found "
                                  f"{json.dumps(item)[:40]}") from None
        raise ServeError(422, f"{where}{refusal.message}") from None
    texts = answered.texts(checked.request_id)
    if texts is None:
        raise ServeError(404, f"{where}request_id: no answered request {checked.request_id!r} "
                              f"among the last {answered.window:,} this server logged; "
                              f"expected the `id` of an answer (older ones: `textclf "
                              f"feedback import`)")
    if not 0 <= checked.index < texts:
        raise ServeError(422, f"{where}index: {checked.index} is out of range; request "
                              f"{checked.request_id!r} had {texts} text{'s' * (texts > 1)} "
                              f"(index 0 to {texts - 1})")
    # The model that answered the request: a version loaded since may have other classes.
    label, answering = canonical_text(checked.label), answered.classes(checked.request_id)
    if label not in (answering or labels):
        raise ServeError(422, f"{where}label: unknown label {checked.label!r}; expected one "
                              f"of the labels of the model that answered it: "
                              f"{', '.join(answering or labels)}")
    return checked.model_copy(update={"label": label})
