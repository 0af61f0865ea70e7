"""Reading a user's dataset, checking it, and the split and label-map files.

Rows are numbered from 1, counting records after the header (for JSON Lines,
row N is the N-th record: line N unless blank lines come before it, which are skipped).
"""

from __future__ import annotations

import codecs
import csv
import errno
import hashlib
import io
import json
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from textclf.canonical import canonical_text, normalize_label
from textclf.errors import UserError
from textclf.outputs import write_json

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".parquet": "parquet", ".pq": "parquet"}
MAX_ROWS_SHOWN = 5


class DataError(UserError):
    """The dataset cannot be used as it is; the message names file, row and column."""


def check_readable(path: Path, folder_ok: bool = False) -> None:
    """Say exactly why `path` cannot be read: missing, a folder, a dangling or looping link."""
    try:
        os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise DataError(f"{path}: a symbolic link loop (following it leads back to "
                            f"itself); expected a data file") from None
        if path.is_symlink():
            raise DataError(f"{path}: a broken symbolic link (it points to "
                            f"{os.readlink(path)!r}, which does not exist)") from None
        if err.errno == errno.ENOENT:
            raise DataError(f"{path}: file not found") from None
        raise DataError(f"{path}: cannot be read: {err.strerror}") from None
    if path.is_dir() and not folder_ok:
        raise DataError(f"{path}: a folder; expected a data file "
                        f"({', '.join(sorted(FORMATS))})")
    if not path.is_dir() and not path.is_file():
        raise DataError(f"{path}: not a regular file (a device, socket or pipe); "
                        f"expected a data file")
    if not os.access(path, os.R_OK | (os.X_OK if path.is_dir() else 0)):
        raise DataError(f"{path}: permission denied; expected a file you can read")


def csv_options(kind: str, quoting: int = csv.QUOTE_MINIMAL) -> dict:
    """How a CSV or TSV is read: every field a string, nothing read as missing."""
    return dict(sep="," if kind == "csv" else "\t", encoding="utf-8-sig", dtype=str,
                keep_default_na=False, na_values=[], quoting=quoting)


def tsv_quoting(lines: Iterable[str]) -> int:
    """How to read a TSV, given its lines. TSV comes two ways: written by a CSV writer
    with a tab for the comma (pandas, Python's csv, spreadsheets: a field holding a quote,
    tab or line break is quoted) or plain (IANA text/tab-separated-values, as GLUE and
    SST-5 are published: no quoting, a quote is a character). A file that parses strictly
    as the first is read so, any other literally, so that `"Great" movie` keeps its
    quotes and a stray quote cannot merge the rows up to the next one into one text."""
    limit = csv.field_size_limit(2**31 - 1)    # a long text is no sign of either way
    try:
        for _ in csv.reader(lines, delimiter="\t", strict=True):
            pass
    except csv.Error:
        return csv.QUOTE_NONE
    finally:
        csv.field_size_limit(limit)
    return csv.QUOTE_MINIMAL


def no_rows(path: Path, columns) -> DataError:
    return DataError(f"{path}: no rows (the file has columns "
                     f"{', '.join(map(str, columns))} but no data)")


def read_table(path: str | Path, columns: Sequence[str]) -> pd.DataFrame:
    """Read a CSV, TSV, JSON Lines or Parquet file (by extension) that has `columns`."""
    path = Path(path)
    check_readable(path)
    kind = table_kind(path)
    if kind == "parquet":
        frame = _read_parquet(path, columns)
    else:
        data = _read_utf8(path)
        try:
            if kind == "jsonl":
                frame = _read_jsonl(path, data.decode("utf-8-sig"))
            else:
                quoting = (tsv_quoting(io.StringIO(data.decode("utf-8-sig"), newline=""))
                           if kind == "tsv" else csv.QUOTE_MINIMAL)
                frame = pd.read_csv(io.BytesIO(data), **csv_options(kind, quoting))
                check_header(path, io.BytesIO(data), kind, quoting)
            del data
        except pd.errors.ParserError as err:
            raise DataError(f"{path}: cannot parse as {kind.upper()}: {err}") from None
        except pd.errors.EmptyDataError:
            raise DataError(f"{path}: the file is empty") from None
    require_columns(path, columns, frame.columns)
    if frame.empty:
        raise no_rows(path, frame.columns)
    return frame.reset_index(drop=True)


def check_header(path: Path, source, kind: str, quoting: int) -> None:
    """Refuse a CSV or TSV header that names a column twice (`source`: the file or its
    bytes, read as the rows were). pandas reads the second as `name.1`, so a command
    would silently use the first; which one the user meant, the file does not say."""
    names = pd.read_csv(source, header=None, nrows=1, **csv_options(kind, quoting)).iloc[0]
    twice = next((name for name in names[names.duplicated()]), None)
    if twice is not None:
        raise DataError(f"{path}: column {twice!r} appears twice in the header; expected "
                        f"each column once")


def table_kind(path: Path) -> str:
    """csv, tsv, jsonl or parquet, by the file's extension."""
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; expected one of "
                        f"{', '.join(sorted(FORMATS))}")
    return kind


def require_columns(path: Path, columns: Sequence[str], found: Iterable) -> None:
    found = list(found)
    missing = [c for c in columns if c not in found]
    if missing:
        raise DataError(f"{path}: no column {missing[0]!r}; found columns: "
                        f"{', '.join(map(str, found)) or '(none)'}")


def not_utf8(path: Path, line: int, byte: int, offset: int) -> DataError:
    return DataError(f"{path}, line {line}: byte 0x{byte:02x} at offset {offset} is not "
                     f"valid UTF-8; expected a UTF-8 text file (re-save it as UTF-8)")


def _read_utf8(path: Path) -> bytes:
    """The file's bytes, checked to be UTF-8 (parsers read bytes: a str copy costs 1-4x more)."""
    data = path.read_bytes()
    try:
        data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        # utf-8-sig reports the position after a BOM it stripped; point into the file itself.
        offset = err.start + (len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0)
        line = data[:offset].count(b"\n") + 1
        raise not_utf8(path, line, data[offset], offset) from None
    return data


def _read_jsonl(path: Path, text: str) -> pd.DataFrame:
    records = []
    # Split on "\n" only: str.splitlines() also breaks at U+2028, U+2029 and U+0085,
    # which JSON allows unescaped inside strings.
    for number, line in enumerate(text.split("\n"), start=1):
        record = jsonl_record(path, number, line)
        if record is not None:
            records.append(record)
    if not records:
        raise DataError(f"{path}: the file has no records")
    frame = pd.DataFrame.from_records(records)
    for column in frame.columns:
        if frame[column].dtype == "float64":
            values = [record.get(column) for record in records]
            if whole_numbers_with_gaps(values):
                frame[column] = pd.Series(values, dtype=object).astype(pd.Int64Dtype())
    return frame


def whole_numbers_with_gaps(values) -> bool:
    """Whether a column of JSON values is whole numbers (within int64) and gaps (null or
    absent), at least one of each: pandas would make it float64, which holds integers
    exactly only up to 2**53 (IDs such as 1512345678901234567 would change). Such a
    column is read as pandas' nullable Int64 instead, exact, its gaps empty on output."""
    ints = gaps = 0
    for value in values:
        if value is None:
            gaps += 1
        elif type(value) is int and -2 ** 63 <= value < 2 ** 63:     # not bool
            ints += 1
        else:
            return False
    return ints > 0 and gaps > 0


def jsonl_record(path: Path, number: int, line: str) -> dict | None:
    """Line `number` of a JSON Lines file as a record, or None for a blank line."""
    if not line.strip():
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}, line {number}: not valid JSON ({err.msg})") from None
    if not isinstance(record, dict):
        raise DataError(f"{path}, line {number}: expected a JSON object, "
                        f"found {type(record).__name__}")
    return record


def _read_parquet(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise DataError(f"{path}: cannot read as Parquet: {err}") from None
    require_columns(path, columns, schema.names)
    try:
        frame = pd.read_parquet(path)
        # pandas reads an integer column as float64 only where it has nulls, exact only
        # up to 2**53: such columns are read again as nullable Int64 (`exact_integers`).
        for name in schema.names:
            if exact_int64(schema.field(name).type) and frame[name].dtype == "float64":
                frame[name] = exact_integers(pq.read_table(path, columns=[name]).column(name))
            elif frame[name].dtype in ("float32", "float16"):
                frame[name] = shortest_decimals(frame[name])
    except (OSError, ValueError) as err:   # a damaged row group: pyarrow's ArrowException
        raise DataError(f"{path}: cannot read as Parquet: {err}") from None
    return frame


def shortest_decimals(column: pd.Series) -> pd.Series:
    """A float32 column as the decimals its writer meant: widened to float64, 0.1 would
    read 0.10000000149011612 and not be the label 0.1 that a CSV spells."""
    return pd.Series([float("nan") if value != value else
                      float(np.format_float_positional(value, unique=True))
                      for value in column.to_numpy()], index=column.index, dtype=object)


def exact_int64(kind) -> bool:
    """A pyarrow integer type whose every value fits int64 (not uint64)."""
    import pyarrow as pa

    return pa.types.is_integer(kind) and not pa.types.is_uint64(kind)


def exact_integers(column) -> pd.Series:
    """A pyarrow integer column as pandas' nullable Int64, every value exact."""
    return pd.Series(column.to_pylist(), dtype=object).astype(pd.Int64Dtype())


def clean_examples(frame: pd.DataFrame, text_column: str, label_column: str,
                   labels: Sequence[str | int] | None, source: str) -> tuple[pd.DataFrame, dict]:
    """Check text and labels row by row; return examples and stats.

    Examples have columns text (as in the file), label (normalised), key (the
    text compared for duplicates, see `canonical_text`) and row (1-based, in the file).
    Duplicates (same key, same label) are dropped and counted, so one example
    can never sit in both train and test; the same key with two labels is an error.
    """
    # Plain objects: pandas 3's string dtype and nullable ints mask and map differently.
    text = frame[text_column].astype(object)
    values = text.tolist()
    is_string = pd.Series([isinstance(v, str) for v in values], index=frame.index, dtype=bool)
    _fail_rows(~is_string & text.notna(), text, source, text_column,
               "expected text (a string)")
    key = pd.Series([canonical_text(v) if isinstance(v, str) else "" for v in values],
                    index=frame.index, dtype=object)
    _fail_rows(key.eq(""), None, source, text_column, "text",
               found="none (empty or missing, or blank once spaces and invisible characters "
                     "are removed)")

    raw_label = frame[label_column].astype(object)
    _fail_rows(raw_label.map(lambda v: isinstance(v, (list, dict))).astype(bool), raw_label,
               source, label_column, "a label (a string or a number)")
    label = pd.Series(_normalize_labels(raw_label.tolist()), index=frame.index, dtype=object)
    _fail_rows(label.isna(), None, source, label_column, "a label",
               found="none (empty or missing)")
    if labels is not None:
        allowed = [normalize_label(v) for v in labels]
        _fail_rows(~label.isin(allowed), label, source, label_column,
                   f"a label in data.labels {allowed}")

    examples = pd.DataFrame({"text": text.astype(str), "label": label.astype(str),
                             "key": key, "row": frame.index + 1})
    _fail_contradictions(examples, source)
    duplicate = examples.duplicated(subset=["key", "label"])
    stats = {"rows_read": len(frame), "duplicates_dropped": int(duplicate.sum())}
    return examples[~duplicate].reset_index(drop=True), stats


def _normalize_labels(values: list) -> list[str | None]:
    # A column holds few distinct labels: normalise each once. The type is part of
    # the key, as True == 1 in Python but they are different labels.
    done: dict = {}
    return [done[k] if (k := (type(v), v)) in done else done.setdefault(k, normalize_label(v))
            for v in values]


def _fail_contradictions(examples: pd.DataFrame, source: str) -> None:
    first_label = examples.groupby("key", sort=False)["label"].transform("first")
    conflict = examples["label"].ne(first_label)
    if not conflict.any():
        return
    same = examples[examples["key"].eq(examples.at[conflict.idxmax(), "key"])]
    rows = same["row"].tolist()
    shown = ", ".join(map(repr, same["label"].iloc[:MAX_ROWS_SHOWN]))
    raise DataError(f"{source}: contradictory duplicates: the text "
                    f"{clip(same['text'].iloc[0])!r} has different labels in "
                    f"{describe_rows(rows)} ({shown}); expected one label per text "
                    f"({int(conflict.sum())} such rows in all)")


def label_order(found: Iterable[str], explicit: Sequence[str | int] | None) -> list[str]:
    """Explicit order if given; else numeric order for integer labels, else sorted."""
    if explicit is not None:
        return [normalize_label(v) for v in explicit]
    found = set(found)
    if all(re.fullmatch(r"-?[0-9]+", v) for v in found):
        return sorted(found, key=int)
    return sorted(found)


def _fail_rows(mask: pd.Series, values: pd.Series | None, source: str, column: str,
               expected: str, found: str = "") -> None:
    """Refuse the rows in `mask`, showing their `values`, or saying what was `found`."""
    if not mask.any():
        return
    rows = (mask[mask].index + 1).tolist()
    found = f", found {found}" if found else ""
    if values is not None:
        shown = [f"row {r}: {clip(values.iloc[r - 1])!r}" for r in rows[:MAX_ROWS_SHOWN]]
        found = "; found " + ", ".join(shown)
    raise DataError(f"{source}: column {column!r}, {len(rows)} bad row(s) "
                    f"({describe_rows(rows)}): expected {expected}{found}")


def describe_rows(rows: list[int]) -> str:
    """"row 3" or "rows 3, 8, 9, 12, 15 and 4 more"."""
    shown = ", ".join(str(r) for r in rows[:MAX_ROWS_SHOWN])
    more = f" and {len(rows) - MAX_ROWS_SHOWN} more" if len(rows) > MAX_ROWS_SHOWN else ""
    return f"row {shown}{more}" if len(rows) == 1 else f"rows {shown}{more}"


def clip(value, width: int = 60):
    text = str(value)
    return text if len(text) <= width else text[:width] + "..."


# Files exchanged between stages: splits as Parquet, the label order as JSON.

def write_split(frame: pd.DataFrame, path: str | Path) -> None:
    frame[["text", "label"]].to_parquet(path, index=False)


def read_split(path: str | Path, labels: Sequence[str] | None = None) -> pd.DataFrame:
    """A split `prepare` wrote (text, label); with `labels`, every row's label among them."""
    frame = read_table(path, ["text", "label"])[["text", "label"]]
    if labels is not None:
        unknown = ~frame["label"].isin(labels)
        _fail_rows(unknown, frame["label"], str(path), "label",
                   f"one of the labels file's labels ({', '.join(map(str, labels))})")
    return frame


def class_counts(frame: pd.DataFrame, labels: Sequence[str]) -> dict[str, int]:
    """Examples per label, in label order, zero for a label with none."""
    counts = frame["label"].value_counts()
    return {label: int(counts.get(label, 0)) for label in labels}


def write_labels(labels: list[str], path: str | Path) -> None:
    write_json(path, {"labels": labels})


def read_labels(path: str | Path) -> list[str]:
    """The label order `prepare` wrote: {"labels": ["neg", "pos"]}."""
    path = Path(path)
    check_readable(path)
    try:
        labels = json.loads(path.read_text(encoding="utf-8")).get("labels")
    except (ValueError, AttributeError):
        labels = None
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise DataError(f"{path}: expected a labels file as prepare writes it, "
                        f'{{"labels": ["neg", "pos", ...]}}')
    return labels


def fingerprint(paths: Iterable[str | Path]) -> dict[str, str]:
    """sha256 of each file, to record which data produced a model."""
    return {str(p): file_sha256(Path(p)) for p in paths}


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in blocks (a model's weights, a data file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
