"""The prediction log: what the server was asked and what it answered, as JSON Lines.

The drift report reads these files; this schema is its contract. Files sit in the log
folder (`textclf serve --log-dir`, default `logs/predictions`), one per UTC day:
`predictions-YYYY-MM-DD.jsonl`; when one reaches `--log-max-mb`, the day continues in
`predictions-YYYY-MM-DD-1.jsonl`, `-2`, ... One line per text, with exactly these fields:

    time           ISO-8601 UTC time the request was answered, e.g. "2026-11-28T21:30:05.123+00:00"
    request_id     the request's `id` if the client sent one (both endpoints take it), else
                   a fresh UUID (hex), as echoed in the response's `id`;
                   the texts of one request share it, in request order
    model_version  the answering model's version (see `textclf serve`), as in the response
    text           the text as classified (after `--max-chars` truncation)
    label          the predicted label
    probability    its probability, rounded to 6 digits (as in the response)
    probabilities  {label: probability} for every class, rounded to 6 digits
    calibrated     true when those are calibrated probabilities (the default), false with
                   `serve --raw-probabilities` or a model folder without a temperature
                   (logs written before 2026-12-05 lack it); the drift report does not
                   trust an estimate from probabilities of the other kind than it compares

Each request's lines go to the file in one `os.write` on a descriptor opened with
O_APPEND, under an exclusive `flock` of the file, before the client gets its answer: a
crash loses at most the request being written, and every answer a client received is in
the log. A write that fails part-way (a full disk) is cut back, so the file never keeps
half a line (`DailyLog`); readers skip and count a damaged line all the same (`textclf
drift --strict` refuses it). The lock makes the checks, the write and a cut-back one step
for every process appending to the folder: the worker processes of `serve --workers N`
share one log, and none can cut back or glue onto another's lines. `DailyLog` is that
writer for any JSON Lines log named `PREFIX-YYYY-MM-DD[-N].jsonl`; the feedback log
(textclf.serving.feedback) uses it too.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import re
import sys
from pathlib import Path
from typing import Optional

FIELDS = ("time", "request_id", "model_version", "text", "label", "probability",
          "probabilities", "calibrated")


def log_lines(time: dt.datetime, request_id: str, model_version: str, texts: list[str],
              answers: list[dict], calibrated: Optional[bool] = None) -> bytes:
    """The JSON Lines of one request: `answers[i]` (label, probability, probabilities)
    for `texts[i]`; `calibrated`: whether those are calibrated probabilities (the drift
    report compares like with like), left out where unsaid."""
    stamp = time.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds")
    said = {} if calibrated is None else {"calibrated": calibrated}
    lines = [json.dumps({"time": stamp, "request_id": request_id,
                         "model_version": model_version, "text": text,
                         "label": answer["label"], "probability": answer["probability"],
                         "probabilities": answer["probabilities"], **said},
                        ensure_ascii=False)
             for text, answer in zip(texts, answers, strict=True)]
    return ("\n".join(lines) + "\n").encode("utf-8")


def log_file_name(day: dt.date, part: int, prefix: str = "predictions") -> str:
    return f"{prefix}-{day.isoformat()}{f'-{part}' if part else ''}.jsonl"


class DailyLog:
    """Appends requests' lines to the day's `PREFIX-YYYY-MM-DD[-N].jsonl` in `folder`,
    rolling at `max_bytes`; one `append` is one write of whole lines.

    The file never keeps a partial line. A write that fails part-way (a full disk, a file
    size limit) is cut back to where it started before the error is raised, so the next
    request's lines start on a line of their own; if even that fails, later requests go
    to the next `-N` file. A file this process has not written yet that does not end with
    a newline (a crash of another writer, or a cut that failed) is left as it is and the
    day continues in the next file. A folder deleted while serving is made again. Each of
    these is said once on stderr (`warn`)."""

    def __init__(self, folder: Path, prefix: str, max_bytes: int = 100 * 2**20, warn=None):
        self.folder = Path(folder)
        self.prefix = prefix
        self.max_bytes = max_bytes
        self._warn = warn or _stderr
        self._day: Optional[dt.date] = None
        self._part = 0
        self._checked: Optional[Path] = None   # the file known to end with a whole line

    def append(self, time: dt.datetime, lines: bytes) -> Path:
        """Write one request's lines; return the file they went to. OSError if they could
        not be written (nothing of them stays in the file)."""
        day = time.astimezone(dt.timezone.utc).date()
        if day != self._day:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._day, self._part = day, self._last_part(day)
        while True:
            path = self.folder / log_file_name(day, self._part, self.prefix)
            fd = self._open(path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)     # released by the close below
                size = os.fstat(fd).st_size
                if size and path != self._checked and not _ends_with_newline(fd, size):
                    self._warn(f"{path} ends with a partial line (a write cut short "
                               f"before); it is left as it is and the log continues in the "
                               f"next file")
                    self._part += 1
                    continue
                # A request never splits across files; an empty file takes it even if large.
                if size and size + len(lines) > self.max_bytes:
                    self._part += 1
                    continue
                self._checked = path
                self._write_whole(fd, path, size, lines)
                return path
            finally:
                os.close(fd)

    def _open(self, path: Path) -> int:
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT   # read: its last byte
        try:
            return os.open(path, flags, 0o644)
        except FileNotFoundError:
            if self.folder.is_dir():
                raise
            self._warn(f"log folder {self.folder} is gone (deleted while serving?); "
                       f"making it again")
            self.folder.mkdir(parents=True, exist_ok=True)
            return os.open(path, flags, 0o644)

    def _write_whole(self, fd: int, path: Path, size: int, lines: bytes) -> None:
        try:
            _write_all(fd, lines)
        except OSError as err:
            try:
                os.ftruncate(fd, size)
            except OSError:
                self._warn(f"{path}: could not cut a partial write back ({err}); later "
                           f"lines go to the next file")
                self._checked = None
                self._part += 1
            raise

    def _last_part(self, day: dt.date) -> int:
        """Continue the highest-numbered file of `day` a previous run left."""
        pattern = re.compile(rf"{re.escape(self.prefix)}-{day.isoformat()}(?:-(\d+))?"
                             rf"\.jsonl")
        parts = [int(m.group(1) or 0) for p in self.folder.iterdir()
                 if (m := pattern.fullmatch(p.name))]
        return max(parts, default=0)


class PredictionLog(DailyLog):
    """The prediction log: `predictions-YYYY-MM-DD[-N].jsonl` in `folder`."""

    def __init__(self, folder: Path, max_bytes: int = 100 * 2**20, warn=None):
        super().__init__(folder, "predictions", max_bytes, warn)


def check_writable(folder: Path) -> None:
    """Make `folder` and write a file in it, or raise OSError naming what failed: a log
    folder the server cannot write is found at start-up, not at the first request."""
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f".write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
    finally:
        probe.unlink(missing_ok=True)


def _ends_with_newline(fd: int, size: int) -> bool:
    return os.pread(fd, 1, size - 1) == b"\n"


def _stderr(message: str) -> None:
    print(f"serve: warning: {message}", file=sys.stderr, flush=True)


def _write_all(fd: int, data: bytes) -> None:
    # os.write may write less than asked (signals, full disks); finish or raise.
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
