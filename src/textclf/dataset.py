"""Reading a user's dataset, checking it, and the split and label-map files.

Rows are numbered from 1, counting records after the header (for JSON Lines,
row N is line N).
"""

from __future__ import annotations

import codecs
import hashlib
import io
import json
import re
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from textclf.errors import UserError
from textclf.outputs import write_json

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".parquet": "parquet", ".pq": "parquet"}
MAX_ROWS_SHOWN = 5


class DataError(UserError):
    """The dataset cannot be used as it is; the message names file, row and column."""


def read_table(path: str | Path, columns: Sequence[str]) -> pd.DataFrame:
    """Read a CSV, TSV, JSON Lines or Parquet file (by extension) that has `columns`."""
    path = Path(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; expected one of "
                        f"{', '.join(sorted(FORMATS))}")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if kind == "parquet":
        frame = _read_parquet(path, columns)
    else:
        data = _read_utf8(path)
        try:
            if kind == "jsonl":
                frame = _read_jsonl(path, data.decode("utf-8-sig"))
            else:
                frame = pd.read_csv(io.BytesIO(data), encoding="utf-8-sig",
                                    sep="," if kind == "csv" else "\t",
                                    dtype=str, keep_default_na=False, na_values=[])
            del data
        except pd.errors.ParserError as err:
            raise DataError(f"{path}: cannot parse as {kind.upper()}: {err}") from None
        except pd.errors.EmptyDataError:
            raise DataError(f"{path}: the file is empty") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: no column {missing[0]!r}; found columns: "
                        f"{', '.join(map(str, frame.columns)) or '(none)'}")
    return frame.reset_index(drop=True)


def _read_utf8(path: Path) -> bytes:
    """The file's bytes, checked to be UTF-8 (parsers read bytes: a str copy costs 1-4x more)."""
    data = path.read_bytes()
    try:
        data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        # utf-8-sig reports the position after a BOM it stripped; point into the file itself.
        offset = err.start + (len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0)
        line = data[:offset].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: byte 0x{data[offset]:02x} at offset "
                        f"{offset} is not valid UTF-8; expected a UTF-8 text file "
                        f"(re-save it as UTF-8)") from None
    return data


def _read_jsonl(path: Path, text: str) -> pd.DataFrame:
    records = []
    # Split on "\n" only: str.splitlines() also breaks at U+2028, U+2029 and U+0085,
    # which JSON allows unescaped inside strings.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}, line {number}: not valid JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}, line {number}: expected a JSON object, "
                            f"found {type(record).__name__}")
        records.append(record)
    if not records:
        raise DataError(f"{path}: the file has no records")
    return pd.DataFrame.from_records(records)


def _read_parquet(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise DataError(f"{path}: cannot read as Parquet: {err}") from None
    missing = [c for c in columns if c not in names]
    if missing:
        raise DataError(f"{path}: no column {missing[0]!r}; found columns: {', '.join(names)}")
    return pd.read_parquet(path)


def clean_examples(frame: pd.DataFrame, text_column: str, label_column: str,
                   labels: Sequence[str | int] | None, source: str) -> tuple[pd.DataFrame, dict]:
    """Check text and labels row by row; return (text, label) rows and stats.

    Exact duplicates (same text, same label) are dropped and counted, so one
    example can never sit in both train and test; the same text with two
    different labels is an error.
    """
    text = frame[text_column]
    not_string = ~text.map(lambda v: isinstance(v, str))
    _fail_rows(not_string & text.notna(), text, source, text_column,
               "expected text (a string)")
    empty = text.isna() | text.fillna("").str.strip().eq("")
    _fail_rows(empty, None, source, text_column, "empty or missing text")

    label = frame[label_column].map(normalize_label)
    _fail_rows(label.isna(), None, source, label_column, "missing label")
    if labels is not None:
        allowed = [normalize_label(v) for v in labels]
        _fail_rows(~label.isin(allowed), label, source, label_column,
                   f"a label in data.labels {allowed}")

    examples = pd.DataFrame({"text": text.astype(str), "label": label.astype(str)})
    examples.index = frame.index + 1
    first_label = examples.groupby("text", sort=False)["label"].transform("first")
    conflict = examples["label"].ne(first_label)
    if conflict.any():
        row = conflict.idxmax()
        text_value = examples.at[row, "text"]
        rows = examples.index[examples["text"].eq(text_value)].tolist()
        raise DataError(f"{source}: contradictory duplicates: the text {_clip(text_value)!r} "
                        f"has different labels in rows {_rows(rows)} "
                        f"({', '.join(repr(examples.at[r, 'label']) for r in rows[:MAX_ROWS_SHOWN])}); "
                        f"expected one label per text ({int(conflict.sum())} such rows in all)")
    duplicate = examples.duplicated(subset=["text", "label"])
    stats = {"rows_read": len(frame), "duplicates_dropped": int(duplicate.sum())}
    return examples[~duplicate].reset_index(drop=True), stats


def normalize_label(value) -> str | None:
    """Labels are compared as strings: 3, 3.0 and '3' are the same label."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def label_order(found: Iterable[str], explicit: Sequence[str | int] | None) -> list[str]:
    """Explicit order if given; else numeric order for integer labels, else sorted."""
    if explicit is not None:
        return [normalize_label(v) for v in explicit]
    found = set(found)
    if all(re.fullmatch(r"-?[0-9]+", v) for v in found):
        return sorted(found, key=int)
    return sorted(found)


def _fail_rows(mask: pd.Series, values: pd.Series | None, source: str, column: str,
               expected: str) -> None:
    if not mask.any():
        return
    rows = (mask[mask].index + 1).tolist()
    found = ""
    if values is not None:
        shown = [f"row {r}: {_clip(values.iloc[r - 1])!r}" for r in rows[:MAX_ROWS_SHOWN]]
        found = "; found " + ", ".join(shown)
    raise DataError(f"{source}: column {column!r}, {len(rows)} bad row(s) ({_rows(rows)}): "
                    f"expected {expected}{found}")


def _rows(rows: list[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:MAX_ROWS_SHOWN])
    more = f" and {len(rows) - MAX_ROWS_SHOWN} more" if len(rows) > MAX_ROWS_SHOWN else ""
    return f"row {shown}{more}" if len(rows) == 1 else f"rows {shown}{more}"


def _clip(value, width: int = 60):
    text = str(value)
    return text if len(text) <= width else text[:width] + "..."


# Files exchanged between stages: splits as Parquet, the label order as JSON.

def write_split(frame: pd.DataFrame, path: str | Path) -> None:
    frame[["text", "label"]].to_parquet(path, index=False)


def read_split(path: str | Path) -> pd.DataFrame:
    return pd.read_parquet(path, columns=["text", "label"])


def class_counts(frame: pd.DataFrame, labels: Sequence[str]) -> dict[str, int]:
    """Examples per label, in label order, zero for a label with none."""
    counts = frame["label"].value_counts()
    return {label: int(counts.get(label, 0)) for label in labels}


def write_labels(labels: list[str], path: str | Path) -> None:
    write_json(path, {"labels": labels})


def read_labels(path: str | Path) -> list[str]:
    return json.loads(Path(path).read_text(encoding="utf-8"))["labels"]


def fingerprint(paths: Iterable[str | Path]) -> dict[str, str]:
    """sha256 of each file, to record which data produced a model."""
    return {str(p): hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}
