"""Shards: N workers label contiguous parts of one input file; `merge` joins their outputs.

Shard I of N (I counted from 0, as a Kubernetes Indexed Job's JOB_COMPLETION_INDEX) holds
whole chunks of the input: the chunks of `chunk_size` rows are dealt out in N contiguous
runs. Whole chunks, so that every text is labelled in the same company as in one
unsharded run with that chunk size (a text's probabilities can move in the 7th digit with
the batch it is padded in), and the merged file equals that run's output byte for byte.

Each shard writes its output where asked (OUT) and a record beside it, `OUT.shard.json`
(ShardRecord): which shard of which input, made with which model, and the output's own
size and sha256. `merge_shards` checks the records and concatenates the outputs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from textclf.data.chunks import BLOCK
from textclf.data.dataset import DataError, check_readable
from textclf.outputs import atomic_file, write_json

FORMAT_VERSION = 1
RECORD_SUFFIX = ".shard.json"
# What every shard of one run shares: a shard differing in one of these is foreign. Not the
# input's name: workers may read copies of one file under different paths.
SAME_RUN = ("input_rows", "input_sha256", "text_column", "chunk_size", "shards", "model",
            "precision")


MAX_SHARDS = 1_000_000      # workers of one job; beyond, a typo (1/1000000000000000000000)


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N), with 0 <= I < N."""
    found = re.fullmatch(r"\s*([0-9]+)\s*/\s*([0-9]+)\s*", text)
    if not found or not int(found[1]) < int(found[2]) <= MAX_SHARDS:
        raise ValueError(f"expected I/N, shard I of N counted from 0 (0 <= I < N <= "
                         f"{MAX_SHARDS:,}, e.g. 0/4 to 3/4), found {text!r}")
    return int(found[1]), int(found[2])


def shard_rows(rows: int, chunk_size: int, shard: int, shards: int) -> range:
    """Rows (0-based) of shard `shard` of `shards`: its run of whole chunks."""
    chunks = -(-rows // chunk_size)
    first, stop = chunks * shard // shards, chunks * (shard + 1) // shards
    return range(min(first * chunk_size, rows), min(stop * chunk_size, rows))


def row_span(rows: range) -> str:
    """'rows 12-19' (0-based, inclusive), or what an empty shard holds."""
    return (f"rows {rows.start}-{rows.stop - 1}" if len(rows) else
            "no rows: more shards than chunks")


def record_path(output: Path) -> Path:
    return output.with_name(output.name + RECORD_SUFFIX)


@dataclass(frozen=True)
class ShardRecord:
    """`OUT.shard.json`: what shard OUT is, and how to check it is the file written."""
    shard: int
    shards: int
    start: int                    # rows start..stop-1 (0-based) of the input
    stop: int
    input_name: str
    input_rows: int
    input_sha256: str
    text_column: str
    chunk_size: int
    model: str                    # the weights' version (sha256)
    precision: str                # what computed (fp32, bf16, fp16, int8), "+ calibrated"
    header_bytes: int             # the output's header (CSV), left out of shards 1.. on merge
    output_bytes: int
    output_sha256: str
    format_version: int = FORMAT_VERSION

    def save(self, output: Path) -> None:
        write_json(record_path(output), dataclasses.asdict(self))

    @classmethod
    def load(cls, output: Path) -> ShardRecord:
        path = record_path(output)
        if not path.is_file():
            raise DataError(f"{output}: no shard record {path.name} beside it; expected an "
                            f"output of `textclf predict --shard I/N`")
        try:
            fields = json.loads(path.read_text(encoding="utf-8"))
            if fields.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"format_version {fields.get('format_version')!r}, "
                                 f"expected {FORMAT_VERSION}")
            return cls(**fields)
        except (ValueError, TypeError, AttributeError) as err:
            raise DataError(f"{path}: not a shard record this version of textclf writes "
                            f"({str(err).splitlines()[0]})") from None

    def describe(self) -> str:
        return f"shard {self.shard}/{self.shards} ({row_span(range(self.start, self.stop))})"


def output_facts(path: Path) -> tuple[int, str]:
    """(size, sha256) of a written output."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while block := handle.read(BLOCK):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def merge_shards(paths: Sequence[Path], output: Path) -> ShardRecord:
    """Check that `paths` are the N shards of one run, each once, and write them to
    `output` (atomically) in shard order; returns shard 0's record."""
    records = []
    for path in paths:
        check_readable(path)
        records.append((path, ShardRecord.load(path)))
        if path.suffix.lower() != output.suffix.lower():
            raise DataError(f"{path}: a {path.suffix} shard; expected {output.suffix} shards "
                            f"to merge into --output {output}")
    ordered = _in_shard_order(records)
    first = ordered[0][1]
    with atomic_file(output) as scratch, open(scratch, "wb") as merged:
        header = _header(*ordered[0])
        for path, record in ordered:
            if _header(path, record) != header:
                raise DataError(f"{path}: its header differs from {ordered[0][0]}'s; "
                                f"expected the columns every shard of one input has")
            _copy_checked(path, record, merged, skip=record.header_bytes if record.shard else 0)
    return first


def _in_shard_order(records: list[tuple[Path, ShardRecord]]
                    ) -> list[tuple[Path, ShardRecord]]:
    first_path, first = records[0]
    by_shard: dict[int, tuple[Path, ShardRecord]] = {}
    for path, record in records:
        for name in SAME_RUN:
            if getattr(record, name) != getattr(first, name):
                raise DataError(f"{path}: not a shard of the same run as {first_path}: its "
                                f"{name} is {getattr(record, name)!r}, expected "
                                f"{getattr(first, name)!r}")
        if record.shard in by_shard:
            raise DataError(f"{path}: shard {record.shard}/{record.shards} again (also "
                            f"{by_shard[record.shard][0]}); expected each shard once")
        expected = shard_rows(record.input_rows, record.chunk_size, record.shard, record.shards)
        if range(record.start, record.stop) != expected:
            raise DataError(f"{path}: {record.describe()}; expected {row_span(expected)} "
                            f"for shard {record.shard}")
        by_shard[record.shard] = path, record
    for shard in range(first.shards):
        if shard not in by_shard:
            rows = shard_rows(first.input_rows, first.chunk_size, shard, first.shards)
            raise DataError(f"{first.input_name}: shard {shard}/{first.shards} "
                            f"({row_span(rows)}) is missing; expected all "
                            f"{first.shards} shard outputs, found shards "
                            f"{', '.join(map(str, sorted(by_shard)))}")
    return [by_shard[s] for s in range(first.shards)]


def _header(path: Path, record: ShardRecord) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(record.header_bytes)


def _copy_checked(path: Path, record: ShardRecord, merged, skip: int) -> None:
    """Append `path` from byte `skip`, checking it is the file its shard wrote."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while block := handle.read(BLOCK):
            digest.update(block)
            merged.write(block[skip - size:] if size < skip else block)
            size += len(block)
    if (size, digest.hexdigest()) != (record.output_bytes, record.output_sha256):
        raise DataError(f"{path}: changed since `textclf predict --shard {record.shard}/"
                        f"{record.shards}` wrote it (size or sha256 differs from "
                        f"{record_path(path).name}); expected the file as written (run that "
                        f"shard again)")
