"""The JSON Lines logs of `textclf serve` (prediction and feedback logs), read line by line:
damaged lines are skipped and counted, or, with `--strict`, the first one is refused.

The server appends each request's lines with one write (textclf.serving.log). A write that a
crash cut short leaves part of a line at the end of a file, which the server then leaves
behind, going on in the next file; logs written before it did so (or copied together by
hand) can hold the next write glued to the half line: one line holding a cut-short record,
then a whole one. A line that is not one JSON object (cut short, glued, not UTF-8) is
damaged. A glued line is skipped whole: the whole record on it is lost with the cut one,
and the count says so. The last line of the newest file of a log, while it has no newline,
is skipped without a count: it may be a write under way.

A line that is a JSON object with a wrong field is no damage but another program's record:
the readers refuse it, naming the field.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, NamedTuple, Optional

from textclf.errors import UserError

# Every record's first bytes (json.dumps keeps the writer's key order). A JSON string
# escapes its quotes, so these bytes later on a line mean that a record was glued on.
LOG_PATTERN = "predictions-YYYY-MM-DD[-N].jsonl"
RECORD_START = b'{"time": "'
GLUED = "a record cut short, with the next record glued to it (both are skipped)"
CUT = "a record cut short"
CUT_AT_END = "a record cut short (the file's last line, without its newline)"


class LogLine(NamedTuple):
    """Where a line is; prints as `FILE, line N`, as messages name it."""
    path: Path
    number: int             # from 1

    def __str__(self) -> str:
        return f"{self.path}, line {self.number}"


@dataclass
class DamagedLines:
    """The damaged lines the readers skipped, per file; with `strict`, the first is refused."""
    strict: bool = False
    lines: dict[Path, set[int]] = field(default_factory=dict)
    glued: set[LogLine] = field(default_factory=set)

    def skip(self, where: LogLine, problem: str) -> None:
        """Count the damaged line at `where` (once, however often it is read)."""
        if self.strict:
            raise UserError(f"{where}: damaged line, {problem}; expected one JSON record per "
                            f"line, as `textclf serve` writes (without --strict, damaged "
                            f"lines are skipped and counted)")
        self.lines.setdefault(where.path, set()).add(where.number)
        if problem == GLUED:
            self.glued.add(where)

    @property
    def count(self) -> int:
        return sum(map(len, self.lines.values()))

    def message(self) -> str:
        """How many lines were skipped, in which files, from which line; '' when none."""
        count = self.count
        if not count:
            return ""
        files = "; ".join(f"{path} ({len(numbers)}, the first at line {min(numbers)})"
                          for path, numbers in self.lines.items())
        glued = (f"; {len(self.glued)} of them held a whole record glued to a cut one, "
                 f"lost with it" if self.glued else "")
        return (f"Skipped {count} damaged log line{'s' * (count > 1)} (not one whole JSON "
                f"record: a write cut short by a full disk or a crash){glued}: {files}. "
                f"--strict refuses such logs.")


def log_files(folder: str | Path, prefix: str) -> list[Path]:
    """`PREFIX-YYYY-MM-DD[-N].jsonl` in `folder`, in the order they were written."""
    pattern = re.compile(rf"{re.escape(prefix)}-(\d{{4}}-\d\d-\d\d)(?:-(\d+))?\.jsonl")
    found = [(m.group(1), int(m.group(2) or 0), p) for p in Path(folder).glob(f"{prefix}-*")
             if (m := pattern.fullmatch(p.name))]
    return [p for _, _, p in sorted(found)]


def prediction_logs(folder: str | Path, flag: str = "") -> list[Path]:
    """The prediction log files in `folder`, in order, or UserError naming the folder (and
    the `flag` that gave it)."""
    files = log_files(folder, "predictions")
    if not files:
        where = f"{flag} {folder}".lstrip()
        raise UserError(f"{where}: no prediction logs ({LOG_PATTERN}) in it; expected the "
                        f"--log-dir of `textclf serve`, after it answered")
    return files


def read_lines(files: list[Path], damaged: DamagedLines) -> Iterator[tuple[LogLine, bytes]]:
    """`log_lines` of a log's `files` in order: only the last one may be being written."""
    for path in files:
        yield from log_lines(path, damaged, newest=path == files[-1])


def log_lines(path: Path, damaged: DamagedLines, newest: bool
              ) -> Iterator[tuple[LogLine, bytes]]:
    """Each non-blank line of `path` without its newline, and where it is. A last line
    without a newline is counted in `damaged`, unless `path` is the `newest` file of its
    log, which a server may be writing."""
    with open(path, "rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            if line.endswith(b"\n"):
                yield LogLine(path, number), line[:-1]
            elif not newest:
                damaged.skip(LogLine(path, number), CUT_AT_END)


def cut_or_glued(line: bytes) -> Optional[str]:
    """Why `line` is not one whole record, as far as its ends show without parsing it
    (cheap enough for every line of a large log); None when it may be one."""
    start = line.rfind(RECORD_START)
    if start > 0:
        return GLUED
    if start == 0 and not line.rstrip().endswith(b"}"):
        return CUT
    return None


def json_record(line: bytes, where: LogLine, damaged: DamagedLines) -> Optional[dict]:
    """The JSON object on `line`, or None when the line is damaged (counted in `damaged`)."""
    problem = cut_or_glued(line)
    if problem is None:
        try:
            record = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as err:
            problem = f"byte {err.start + 1} is not valid UTF-8"
        except json.JSONDecodeError as err:
            problem = f"not valid JSON ({err.msg})"
        else:
            if isinstance(record, dict):
                return record
            problem = f"a JSON {type(record).__name__}, not an object"
    damaged.skip(where, problem)
    return None
