"""Command `predict`: label new texts with a model folder written by `train`.

    textclf predict --model models/classifier "great value" "never again"
    textclf predict --model models/classifier --input new.csv --output labelled.csv
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from textclf.data.dataset import DataError, read_table
from textclf.errors import UserError, exits_on_user_error
from textclf.model.labeller import Labeller
from textclf.outputs import atomic_file
from textclf.params import PRECISIONS


def label_texts(labeller: Labeller, texts: list[str]) -> pd.DataFrame:
    """Predicted label and its probability for each text, in input order."""
    probs = labeller.probabilities(texts)
    best = probs.argmax(axis=1)
    return pd.DataFrame({"predicted_label": [labeller.labels[i] for i in best],
                         "probability": probs.max(axis=1).round(6)})


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, found {value!r}")
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, found {number}")
    return number


def check_texts(texts: list, where) -> None:
    """Refuse what cannot be labelled honestly: a model always answers one of its classes,
    so an empty text would get a confident-looking guess. `where(i)` names text i."""
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise DataError(f"{where(i)}: expected text, found {text!r}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise DataError(f"{where(i)}: not valid UTF-8 (found undecodable bytes); "
                            f"expected UTF-8 text") from None
        if not text.strip():
            raise DataError(f"{where(i)}: empty or whitespace-only text; expected text "
                            f"to label (remove the row or fill it in)")


def check_output(output: Path, input_path: str | None) -> None:
    if output.is_dir():
        raise UserError(f"--output {output}: is a folder; expected a file path "
                        f"(.csv or .jsonl)")
    if input_path and output.exists() and output.resolve() == Path(input_path).resolve():
        raise UserError(f"--output {output}: is the --input file; expected another path, "
                        f"so the input is never overwritten")
    if output.suffix.lower() not in (".csv", ".jsonl"):
        raise UserError(f"--output {output}: unsupported type {output.suffix!r}; "
                        f"expected .csv or .jsonl")


@exits_on_user_error
def main(argv: list[str] | None = None) -> None:
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
    parser.add_argument("--batch-size", type=positive_int, default=64,
                        help="texts per forward pass (default: 64)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="auto: the fastest this machine runs well (bf16 where it pays, "
                             "else int8 where measured faster than fp32); int8: ONNX Runtime "
                             "with int8 weights (measured: same accuracy on SST-5, but 5-7%% of "
                             "labels differ from fp32 on texts unlike the training data)")
    args = parser.parse_args(argv)
    if bool(args.texts) == bool(args.input):
        parser.error("give either texts as arguments or --input FILE (not both)")
    if args.input and not args.output:
        parser.error("--input needs --output FILE (.csv or .jsonl)")
    if args.output:
        check_output(args.output, args.input)

    if args.input:
        rows = read_table(args.input, [args.text_column])
        if rows.empty:
            raise DataError(f"{args.input}: no rows to label; expected at least one text")
        texts = rows[args.text_column].tolist()
        check_texts(texts, lambda i: f"{args.input}: column {args.text_column!r}, row {i + 1}")
    else:
        check_texts(args.texts, lambda i: f"text argument {i + 1}")
        rows, texts = pd.DataFrame({"text": args.texts}), args.texts
    labeller = Labeller.load(args.model, args.precision, batch_size=args.batch_size)
    result = label_texts(labeller, texts)
    labelled = pd.concat([rows.reset_index(drop=True), result], axis=1)
    if args.output:
        write_predictions(labelled, args.output)
        print(f"predict: {len(labelled)} rows -> {args.output}", file=sys.stderr)
    else:
        for record in labelled.to_dict(orient="records"):
            print(json.dumps(record, ensure_ascii=False))


def write_predictions(frame: pd.DataFrame, path: Path) -> None:
    suffix = path.suffix.lower()
    with atomic_file(path) as scratch:
        if suffix == ".csv":
            frame.to_csv(scratch, index=False)
        else:
            frame.to_json(scratch, orient="records", lines=True, force_ascii=False)


if __name__ == "__main__":
    main()
