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

Each request's lines go to the file in one `os.write` on a descriptor opened with
O_APPEND, before the client gets its answer: a crash loses at most the request being
written, and every answer a client received is in the log. `DailyLog` is that writer for
any JSON Lines log named `PREFIX-YYYY-MM-DD[-N].jsonl`; the feedback log
(textclf.serving.feedback) uses it too.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path
from typing import Optional

FIELDS = ("time", "request_id", "model_version", "text", "label", "probability",
          "probabilities")


def log_lines(time: dt.datetime, request_id: str, model_version: str, texts: list[str],
              answers: list[dict]) -> bytes:
    """The JSON Lines of one request: `answers[i]` (label, probability, probabilities)
    for `texts[i]`."""
    stamp = time.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds")
    lines = [json.dumps({"time": stamp, "request_id": request_id,
                         "model_version": model_version, "text": text,
                         "label": answer["label"], "probability": answer["probability"],
                         "probabilities": answer["probabilities"]}, ensure_ascii=False)
             for text, answer in zip(texts, answers, strict=True)]
    return ("\n".join(lines) + "\n").encode("utf-8")


def log_file_name(day: dt.date, part: int, prefix: str = "predictions") -> str:
    return f"{prefix}-{day.isoformat()}{f'-{part}' if part else ''}.jsonl"


class DailyLog:
    """Appends requests' lines to the day's `PREFIX-YYYY-MM-DD[-N].jsonl` in `folder`,
    rolling at `max_bytes`; one `append` is one write of whole lines."""

    def __init__(self, folder: Path, prefix: str, max_bytes: int = 100 * 2**20):
        self.folder = Path(folder)
        self.prefix = prefix
        self.max_bytes = max_bytes
        self._day: Optional[dt.date] = None
        self._part = 0

    def append(self, time: dt.datetime, lines: bytes) -> Path:
        """Write one request's lines; return the file they went to."""
        day = time.astimezone(dt.timezone.utc).date()
        if day != self._day:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._day, self._part = day, self._last_part(day)
        while True:
            path = self.folder / log_file_name(day, self._part, self.prefix)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                size = os.fstat(fd).st_size
                # A request never splits across files; an empty file takes it even if large.
                if size and size + len(lines) > self.max_bytes:
                    self._part += 1
                    continue
                _write_all(fd, lines)
                return path
            finally:
                os.close(fd)

    def _last_part(self, day: dt.date) -> int:
        """Continue the highest-numbered file of `day` a previous run left."""
        pattern = re.compile(rf"{re.escape(self.prefix)}-{day.isoformat()}(?:-(\d+))?"
                             rf"\.jsonl")
        parts = [int(m.group(1) or 0) for p in self.folder.iterdir()
                 if (m := pattern.fullmatch(p.name))]
        return max(parts, default=0)


class PredictionLog(DailyLog):
    """The prediction log: `predictions-YYYY-MM-DD[-N].jsonl` in `folder`."""

    def __init__(self, folder: Path, max_bytes: int = 100 * 2**20):
        super().__init__(folder, "predictions", max_bytes)


def _write_all(fd: int, data: bytes) -> None:
    # os.write may write less than asked (signals, full disks); finish or raise.
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
