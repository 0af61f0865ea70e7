"""Command `predict`: label new texts with a model folder written by `train`.

    textclf predict --model models/classifier "great value" "never again"
    textclf predict --model models/classifier --input new.csv --output labelled.csv
    textclf predict --input new.csv --output part-0.csv --shard 0/4    (worker 0 of 4)
    textclf predict --merge part-*.csv --output labelled.csv

A file is read, labelled and written in chunks of --chunk-size rows; its output appears only
once whole (docs/batch-prediction.md).
"""

from __future__ import annotations

import argparse
import errno
import itertools
import json
import sys
from pathlib import Path
from typing import Iterator

import pandas as pd

from textclf.canonical import canonical_text
from textclf.data.chunks import Table, count_rows, open_table, read_chunks, write_chunks
from textclf.data.dataset import DataError
from textclf.data.shards import (ShardRecord, merge_shards, output_facts, parse_shard,
                                 record_path, shard_rows)
from textclf.errors import UserError, exits_on_user_error
from textclf.flags import integer
from textclf.model.labeller import Labeller, rounded, top_labels
from textclf.model.loading import weights_version
from textclf.outputs import atomic_file, check_outputs
from textclf.params import PRECISIONS


def label_texts(labeller: Labeller, texts: list[str]) -> pd.DataFrame:
    """Predicted label and its probability for each text, in input order."""
    labels, top = top_labels(labeller.probabilities(texts), labeller.labels)
    return pd.DataFrame({"predicted_label": labels, "probability": rounded(top)})


def shard_spec(value: str) -> tuple[int, int]:
    try:
        return parse_shard(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def check_texts(texts: list, where) -> None:
    """Refuse what cannot be labelled honestly: a model always answers one of its classes,
    so an empty text would get a confident-looking guess, and so would one of only
    invisible characters (zero-width spaces, controls), which is empty as data reads texts
    (`canonical_text`). `where(i)` names text i."""
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise DataError(f"{where(i)}: expected text, found {text!r}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise DataError(f"{where(i)}: not valid UTF-8 (found undecodable bytes); "
                            f"expected UTF-8 text") from None
        if not canonical_text(text):
            raise DataError(f"{where(i)}: empty, whitespace-only or invisible-only text "
                            f"(found {text!r:.40}); expected text to label (remove the row "
                            f"or fill it in)")


def check_output(output: Path, input_path: str | None) -> None:
    check_outputs([("--output", output)], [("--input", input_path)] if input_path else [])
    if output.suffix.lower() not in (".csv", ".jsonl"):
        raise UserError(f"--output {output}: unsupported type {output.suffix!r}; "
                        f"expected .csv or .jsonl")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="textclf predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("texts", nargs="*", help="texts to label (or use --input)")
    parser.add_argument("--model", default="models/classifier",
                        help="model folder written by `textclf train`, or any Hugging Face "
                             "classification folder (default: models/classifier)")
    parser.add_argument("--input", help="CSV, TSV, JSON Lines or Parquet file of texts")
    parser.add_argument("--text-column", default="text", help="column of --input to label")
    parser.add_argument("--output", type=Path,
                        help="where to write --input's rows with predictions "
                             "(CSV or JSON Lines by extension)")
    parser.add_argument("--batch-size", type=integer(1, 100_000), default=64,
                        help="texts per forward pass (1 to 100000, default: 64)")
    parser.add_argument("--chunk-size", type=integer(1, 10_000_000), default=10_000,
                        help="rows of --input read, labelled and written at a time; memory "
                             "grows with it (1 to 10000000, default: 10000)")
    parser.add_argument("--shard", type=shard_spec, metavar="I/N",
                        help="label only shard I of N (I from 0 to N-1), a contiguous run of "
                             "whole chunks; writes --output and OUTPUT.shard.json beside it")
    parser.add_argument("--merge", nargs="+", type=Path, metavar="SHARD",
                        help="join the N outputs of one --shard run (in any order) into "
                             "--output, checking that each shard is there once")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="auto: the fastest this machine runs well that keeps the "
                             "model's answers (bf16 where it pays, else int8 where measured "
                             "faster than fp32 and giving fp32's labels on 99.5%% of the "
                             "model's validation split, else fp32); int8: ONNX Runtime with "
                             "int8 weights, unchecked (measured on the demo model: 3%% of "
                             "validation labels and 7%% of SST-5 dev labels differ from fp32)")
    parser.add_argument("--raw-probabilities", action="store_true",
                        help="write the model's own probabilities, not the calibrated ones "
                             "(the temperature `train` fitted on the validation split; the "
                             "labels are the same)")
    args = parser.parse_args(argv)
    if args.merge and (args.texts or args.input or args.shard):
        parser.error("--merge joins shard outputs: give no texts, --input or --shard with it")
    if not args.merge and bool(args.texts) == bool(args.input):
        parser.error("give either texts as arguments or --input FILE (not both)")
    if (args.input or args.merge) and not args.output:
        parser.error(f"{'--merge' if args.merge else '--input'} needs --output FILE "
                     f"(.csv or .jsonl)")
    if args.shard and not args.input:
        parser.error("--shard needs --input FILE and --output FILE")
    if args.texts:
        given = [flag for flag, value, default in (
            ("--output", args.output, None),
            ("--text-column", args.text_column, parser.get_default("text_column")),
            ("--chunk-size", args.chunk_size, parser.get_default("chunk_size")))
            if value != default]
        if given:
            parser.error(f"{given[0]} applies to --input FILE; texts given as arguments are "
                         f"answered on stdout, one JSON line each")
    return args


@exits_on_user_error
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.output:
        check_output(args.output, args.input)
    if args.merge:
        merge(args.merge, args.output)
    elif args.input:
        label_file(args)
    else:
        check_texts(args.texts, lambda i: f"text argument {i + 1}")
        labeller = Labeller.load(args.model, args.precision, batch_size=args.batch_size,
                                 calibrated=not args.raw_probabilities)
        labelled = pd.concat([pd.DataFrame({"text": args.texts}),
                              label_texts(labeller, args.texts)], axis=1)
        for record in labelled.to_dict(orient="records"):
            print(json.dumps(record, ensure_ascii=False))


ADDED = ("predicted_label", "probability")      # the columns --output adds to --input's

# What writing --output can meet that is the disk's fault, not the input's.
WRITE_FAILURES = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EIO}


def label_file(args: argparse.Namespace) -> None:
    """--input to --output chunk by chunk (or only the rows of --shard)."""
    table = open_table(args.input, [args.text_column], digest=bool(args.shard))
    taken = [column for column in ADDED if column in table.columns]
    if taken:
        raise UserError(f"--input {args.input}: already has a column {taken[0]!r} (an earlier "
                        f"output?); predict adds {' and '.join(ADDED)}: rename or drop it")
    total = count_rows(table) if args.shard else table.rows
    rows = shard_rows(total, args.chunk_size, *args.shard) if args.shard else None
    chunks = checked_chunks(table, args.input, args.text_column, args.chunk_size, rows)
    first = list(itertools.islice(chunks, 1))   # a bad row near the top fails before loading
    labeller = Labeller.load(args.model, args.precision, batch_size=args.batch_size,
                             calibrated=not args.raw_probabilities)
    labelled = (labelled_chunk(labeller, chunk, args.text_column) for chunk in
                with_progress(itertools.chain(first, chunks),
                              len(rows) if rows is not None else total))
    columns = [*table.columns, *ADDED]
    try:
        with atomic_file(args.output) as scratch:
            header, written = write_chunks(labelled, scratch,
                                           args.output.suffix.lower().lstrip("."), columns)
    except OSError as err:
        if err.errno not in WRITE_FAILURES:
            raise
        # A full disk or a file-size limit: atomic_file removed the scratch.
        raise UserError(f"--output {args.output}: could not write "
                        f"({err.strerror or err}); nothing was written") from err
    if not args.shard:
        record_path(args.output).unlink(missing_ok=True)   # left by an earlier shard run
        print(f"predict: {written} rows -> {args.output}", file=sys.stderr)
        return
    record = ShardRecord(*args.shard, rows.start, rows.stop, table.path.name, total,
                         table.sha256, args.text_column, args.chunk_size,
                         weights_version(labeller.folder),
                         labeller.precision + (" + calibrated" if labeller.calibration else ""),
                         header,
                         *output_facts(args.output))
    record.save(args.output)
    print(f"predict: {record.describe()} of {args.input} -> {args.output} "
          f"(and {record_path(args.output).name})", file=sys.stderr)


def checked_chunks(table: Table, source: str, column: str, chunk_size: int,
                   rows: range | None) -> Iterator[pd.DataFrame]:
    """Chunks whose texts passed check_texts; rows are named by their place in the file."""
    for chunk in read_chunks(table, chunk_size, rows):
        check_texts(chunk[column].tolist(),
                    lambda i: f"{source}: column {column!r}, row {chunk.index[i] + 1}")
        yield chunk


def labelled_chunk(labeller: Labeller, chunk: pd.DataFrame, column: str) -> pd.DataFrame:
    result = label_texts(labeller, chunk[column].tolist())
    return pd.concat([chunk.reset_index(drop=True), result], axis=1)


def with_progress(chunks: Iterator[pd.DataFrame], total: int | None
                  ) -> Iterator[pd.DataFrame]:
    """A progress bar on stderr where stderr is a terminal (not in logs or pipes)."""
    if not sys.stderr.isatty():
        yield from chunks
        return
    from tqdm import tqdm

    with tqdm(total=total, unit="text", file=sys.stderr) as bar:
        for chunk in chunks:
            yield chunk
            bar.update(len(chunk))


def merge(shards: list[Path], output: Path) -> None:
    if any(output.resolve() == shard.resolve() for shard in shards):
        raise UserError(f"--output {output}: is one of the shards to merge; expected "
                        f"another path")
    if output.is_file():
        sources = {ShardRecord.load(shard).input_sha256 for shard in shards}
        if output_facts(output)[1] in sources:
            raise UserError(f"--output {output}: is the input the shards were labelled from "
                            f"(same sha256); expected another path, so the input is never "
                            f"overwritten")
    record = merge_shards(shards, output)
    record_path(output).unlink(missing_ok=True)
    print(f"predict: {record.shards} shards, {record.input_rows} rows of "
          f"{record.input_name} -> {output}", file=sys.stderr)


if __name__ == "__main__":
    main()
