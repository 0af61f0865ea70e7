"""Big tables in chunks of rows, so that memory stays flat whatever the file's length.

`open_table` checks what `read_table` checks (the file, its type, UTF-8, the columns, at
least one row) without loading the file. `read_chunks` then yields DataFrames of
`chunk_size` rows, cut at multiples of `chunk_size` counted from the file's first row and
indexed by the rows' 0-based positions in the file, with the columns and dtypes
`read_table` gives the whole file. `write_chunks` writes frames one after another, byte for
byte as the whole frame's `to_csv` would, and JSON Lines as `json_lines` writes it.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from textclf.data.dataset import (DataError, check_header, check_readable, csv_options,
                                  exact_int64, file_sha256,
                                  exact_integers, jsonl_record, no_rows, not_utf8,
                                  require_columns, table_kind, tsv_quoting,
                                  whole_numbers_with_gaps)

BLOCK = 1 << 20           # bytes read at a time to check UTF-8 or hash a file
COUNT_CHUNK = 100_000     # rows parsed at a time to count a CSV's rows


@dataclass(frozen=True)
class Table:
    """A table checked and ready to read in chunks."""
    path: Path
    kind: str                         # csv, tsv, jsonl or parquet
    columns: tuple[str, ...]          # as read_table names them
    rows: int | None                  # known without a pass for JSON Lines and Parquet
    sha256: str | None                # of the file's bytes, where asked for
    # Whole-file dtypes where a chunk's own inference could differ: in JSON Lines an int
    # column with one gap is float64 in the whole file; in Parquet, ints or bools with nulls.
    dtypes: dict = field(default_factory=dict)
    quoting: int = csv.QUOTE_MINIMAL  # a plain TSV is read literally (dataset.tsv_quoting)


def open_table(path: str | Path, columns: Sequence[str], digest: bool = False) -> Table:
    """Check `path` as read_table would, without loading it; `digest`: hash its bytes."""
    path = Path(path)
    check_readable(path)
    kind = table_kind(path)
    if kind == "parquet":
        return _open_parquet(path, columns, file_sha256(path) if digest else None)
    sha256 = check_utf8(path)
    if kind == "jsonl":
        return _open_jsonl(path, columns, sha256 if digest else None)
    quoting = csv.QUOTE_MINIMAL
    if kind == "tsv":
        with open(path, encoding="utf-8-sig", newline="") as lines:
            quoting = tsv_quoting(lines)
    try:
        head = pd.read_csv(path, nrows=1, **csv_options(kind, quoting))
    except pd.errors.ParserError as err:
        raise DataError(f"{path}: cannot parse as {kind.upper()}: {err}") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty") from None
    check_header(path, path, kind, quoting)
    require_columns(path, columns, head.columns)
    if head.empty:
        raise no_rows(path, head.columns)
    return Table(path, kind, tuple(head.columns), None, sha256 if digest else None,
                 quoting=quoting)


def count_rows(table: Table) -> int:
    """Rows in the table; a CSV or TSV is parsed in chunks to count them (a quoted field
    may hold line breaks), keeping only its first column."""
    if table.rows is not None:
        return table.rows
    with pd.read_csv(table.path, usecols=[0], chunksize=COUNT_CHUNK,
                     **csv_options(table.kind, table.quoting)) as reader:
        return sum(len(chunk) for chunk in _parsed(table, reader))


def read_chunks(table: Table, chunk_size: int, rows: range | None = None
                ) -> Iterator[pd.DataFrame]:
    """The table's rows (or those in `rows`) in chunks, each indexed by row position."""
    start = rows.start if rows is not None else 0
    stop = rows.stop if rows is not None else None
    if table.kind == "jsonl":
        chunks = _jsonl_chunks(table, chunk_size)
    elif table.kind == "parquet":
        chunks = _aligned(_parquet_pieces(table, chunk_size), chunk_size)
    else:
        chunks = _csv_chunks(table, chunk_size)
    for chunk in chunks:
        first = chunk.index[0]
        if stop is not None and first >= stop:
            chunks.close()
            return
        if first + len(chunk) > start:
            lo = max(start - first, 0)
            hi = len(chunk) if stop is None else min(stop - first, len(chunk))
            yield chunk if (lo, hi) == (0, len(chunk)) else chunk.iloc[lo:hi]


def write_chunks(frames: Iterable[pd.DataFrame], path: Path, kind: str,
                 columns: Sequence[str]) -> tuple[int, int]:
    """Write `frames` (all with `columns`) one after another into `path` as CSV or JSON
    Lines (`kind`: csv or jsonl); the CSV header is written even when no frame comes.
    Returns the header's length in bytes (0 for JSON Lines) and the rows written."""
    header = pd.DataFrame(columns=list(columns)).to_csv(index=False) if kind == "csv" else ""
    rows = 0
    # What to_csv opens a path with: UTF-8, no newline translation.
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(header)
        for frame in frames:
            rows += len(frame)
            if kind == "csv":
                csv_ready(frame).to_csv(handle, index=False, header=False)
            elif len(frame):
                handle.write(json_lines(frame))
    return len(header.encode("utf-8")), rows


def csv_ready(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with lists, dicts and arrays (from JSON Lines or Parquet) as JSON text:
    to_csv would write Python's repr (`{'a': [1, 2]}`) or numpy's (`[1 2]`)."""
    nested = [column for column in frame.columns if frame[column].dtype == object
              and frame[column].map(lambda v: isinstance(v, (list, dict, np.ndarray))).any()]
    if not nested:
        return frame
    frame = frame.copy()
    for column in nested:
        frame[column] = frame[column].map(
            lambda v: json.dumps(_json_value(v), ensure_ascii=False, default=_json_default)
            if isinstance(v, (list, dict, np.ndarray)) else v)
    return frame


def json_lines(frame: pd.DataFrame) -> str:
    """One JSON object per row, each value as Python's json writes it, not as pandas'
    to_json does: a float in the shortest form that reads back the same (to_json keeps 10
    decimals: 3.141592653589793 became 3.1415926536), a time in ISO 8601 with its zone
    (to_json writes epoch milliseconds, dropping the zone), null for a missing value."""
    columns = [str(column) for column in frame.columns]
    return "".join(
        json.dumps(dict(zip(columns, map(_json_value, row))), ensure_ascii=False,
                   allow_nan=False, default=_json_default, separators=(",", ":")) + "\n"
        for row in frame.itertuples(index=False, name=None))


def _json_value(value):
    """None for every pandas and numpy spelling of a missing value."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and value != value:         # NaN, numpy's included
        return None
    return value


def _json_default(value):
    """What json cannot write itself: numpy scalars and arrays, times, the rest as text."""
    if isinstance(value, np.generic):
        return _json_value(value.item())
    if isinstance(value, np.ndarray):
        return [_json_value(item) for item in value.tolist()]
    if isinstance(value, (dt.datetime, dt.date, dt.time)):    # pd.Timestamp included
        return value.isoformat()
    return str(value)


def check_utf8(path: Path) -> str:
    """Read `path` once in blocks: fail as read_table does on the first byte that is not
    UTF-8 (its line and offset in the file); return the sha256 of its bytes."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    digest = hashlib.sha256()
    offset = lines = 0                    # bytes and line breaks before `block`
    with open(path, "rb") as handle:
        while True:
            block = handle.read(BLOCK)
            digest.update(block)
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as err:
                # err.object is the bytes the decoder held back from the last block (part
                # of a character, never a line break) followed by `block`.
                at = offset - (len(err.object) - len(block)) + err.start
                line = lines + err.object[:err.start].count(b"\n") + 1
                raise not_utf8(path, line, err.object[err.start], at) from None
            if not block:
                return digest.hexdigest()
            offset += len(block)
            lines += block.count(b"\n")


# --- CSV and TSV: pandas' own chunked reader ---

def _csv_chunks(table: Table, chunk_size: int) -> Iterator[pd.DataFrame]:
    with pd.read_csv(table.path, chunksize=chunk_size,
                     **csv_options(table.kind, table.quoting)) as reader:
        yield from _parsed(table, reader)


def _parsed(table: Table, reader) -> Iterator[pd.DataFrame]:
    """The reader's chunks (indexed by row position), with a parse error as read_table
    words it; a bad row far down the file is only met when the reader gets there."""
    try:
        yield from reader
    except pd.errors.ParserError as err:
        raise DataError(f"{table.path}: cannot parse as {table.kind.upper()}: {err}") from None


# --- JSON Lines: read_table's record rules, and its whole-file dtypes ---

def _jsonl_records(path: Path) -> Iterator[dict]:
    with open(path, "rb") as handle:
        # Binary lines break at b"\n" only, as read_table's text.split("\n").
        for number, raw in enumerate(handle, start=1):
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8").removesuffix("\n")
            record = jsonl_record(path, number, line)
            if record is not None:
                yield record


def _value_kind(value) -> object:
    """What decides the dtype pandas infers for a column holding `value`."""
    if type(value) is int:            # not bool, a subclass of int
        return "int", value < 0, value < 2 ** 63, value < 2 ** 64
    return type(value)


def _open_jsonl(path: Path, columns: Sequence[str], sha256: str | None) -> Table:
    # One pass over the records: the columns in order of first appearance (as
    # DataFrame.from_records orders them), and one example of each kind of value per
    # column, from which pandas infers the whole file's dtype exactly.
    examples: dict[str, dict] = {}
    present: dict[str, int] = {}
    rows = 0
    for record in _jsonl_records(path):
        rows += 1
        for key, value in record.items():
            examples.setdefault(key, {}).setdefault(_value_kind(value), value)
            present[key] = present.get(key, 0) + 1
    if not rows:
        raise DataError(f"{path}: the file has no records")
    require_columns(path, columns, examples)
    dtypes = {}
    for key, values in examples.items():
        gap = [{}] if present[key] < rows else []
        records = [{key: v} for v in values.values()] + gap
        dtypes[key] = pd.DataFrame.from_records(records, columns=[key])[key].dtype
        if dtypes[key] == "float64" and whole_numbers_with_gaps(
                [*values.values(), *([None] if gap else [])]):
            dtypes[key] = pd.Int64Dtype()       # as read_table reads it: exact
    return Table(path, "jsonl", tuple(examples), rows, sha256, dtypes)


def _jsonl_chunks(table: Table, chunk_size: int) -> Iterator[pd.DataFrame]:
    records: list[dict] = []
    first = 0
    for record in _jsonl_records(table.path):
        records.append(record)
        if len(records) == chunk_size:
            yield _jsonl_frame(table, records, first)
            first += chunk_size
            records = []
    if records:
        yield _jsonl_frame(table, records, first)


def _jsonl_frame(table: Table, records: list[dict], first: int) -> pd.DataFrame:
    columns = list(table.columns)
    frame = pd.DataFrame.from_records(records, columns=columns)
    for column in columns:
        if frame[column].dtype != table.dtypes[column]:
            # Rebuilt from the values themselves (an int column inferred as float64 here
            # but object in the whole file must keep its ints).
            raw = pd.Series([r.get(column, np.nan) for r in records], dtype=object)
            frame[column] = raw.astype(table.dtypes[column])
    frame.index = pd.RangeIndex(first, first + len(frame))
    return frame


# --- Parquet: pyarrow's record batches ---

def _open_parquet(path: Path, columns: Sequence[str], sha256: str | None) -> Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise DataError(f"{path}: cannot read as Parquet: {err}") from None
    schema = parquet.schema_arrow
    require_columns(path, columns, schema.names)
    names = schema.empty_table().to_pandas().reset_index(drop=True).columns
    if parquet.metadata.num_rows == 0:
        raise no_rows(path, names)
    # Whole-file conversion gives ints with a null float64 and bools with a null object
    # dtype; a batch without nulls would keep int64 or bool.
    dtypes = {}
    for name in names:
        kind = schema.field(name).type
        if (pa.types.is_integer(kind) or pa.types.is_boolean(kind)) and \
                _has_nulls(parquet, name):
            dtypes[name] = (pd.Int64Dtype() if exact_int64(kind) else
                            np.dtype("float64") if pa.types.is_integer(kind) else
                            np.dtype(object))     # as read_table reads them
    return Table(path, "parquet", tuple(names), parquet.metadata.num_rows, sha256, dtypes)


def _has_nulls(parquet, name: str) -> bool:
    """From the row groups' statistics where written, else by reading that column."""
    metadata = parquet.metadata
    leaf = [metadata.schema.column(i).path for i in range(metadata.num_columns)].index(name)
    counts = [metadata.row_group(g).column(leaf).statistics
              for g in range(metadata.num_row_groups)]
    if all(s is not None and s.has_null_count for s in counts):
        return sum(s.null_count for s in counts) > 0
    return any(batch.column(0).null_count for batch in parquet.iter_batches(columns=[name]))


def _parquet_pieces(table: Table, chunk_size: int) -> Iterator[pd.DataFrame]:
    import pyarrow.parquet as pq

    batches = pq.ParquetFile(table.path).iter_batches(batch_size=chunk_size)
    while True:
        try:
            batch = next(batches, None)
        except (OSError, ValueError) as err:     # a damaged row group (ArrowException)
            raise DataError(f"{table.path}: cannot read as Parquet: {err}") from None
        if batch is None:
            return
        # read_table drops the index pandas may have stored (reset_index(drop=True)).
        piece = batch.to_pandas().reset_index(drop=True)
        for name, dtype in table.dtypes.items():
            column = piece[name].dtype
            if dtype == pd.Int64Dtype():
                piece[name] = exact_integers(batch.column(name))
            elif isinstance(column, np.dtype) and column.kind in "biu" and column != dtype:
                piece[name] = piece[name].astype(dtype)
        yield piece


def _aligned(pieces: Iterator[pd.DataFrame], chunk_size: int) -> Iterator[pd.DataFrame]:
    """Pieces of any length (Parquet batches stop at row-group ends) as chunks of exactly
    `chunk_size` rows but the last, indexed by row position."""
    buffer: list[pd.DataFrame] = []
    buffered = first = 0
    for piece in pieces:
        while len(piece):
            take = piece.iloc[:chunk_size - buffered]
            buffer.append(take)
            buffered += len(take)
            piece = piece.iloc[len(take):]
            if buffered == chunk_size:
                yield _joined(buffer, first)
                first += chunk_size
                buffer, buffered = [], 0
    if buffered:
        yield _joined(buffer, first)


def _joined(frames: list[pd.DataFrame], first: int) -> pd.DataFrame:
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].copy()
    frame.index = pd.RangeIndex(first, first + len(frame))
    return frame
