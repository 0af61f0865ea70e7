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
import torch

from textclf.batching import encode
from textclf.dataset import DataError, read_table
from textclf.errors import UserError, exits_on_user_error
from textclf.modeling import (choose_device, choose_precision, load_classifier,
                              predict_proba, quiet_transformers)
from textclf.outputs import atomic_file


def label_texts(model, tokenizer, texts: list[str], labels: list[str], max_length: int,
                device: torch.device, batch_size: int = 64,
                precision: str = "auto") -> pd.DataFrame:
    """Predicted label and its probability for each text, in input order."""
    ids = encode(tokenizer, texts, max_length)
    probs = predict_proba(model.to(device), ids, tokenizer.pad_token_id, batch_size, device,
                          choose_precision(device, precision))
    best = probs.argmax(axis=1)
    return pd.DataFrame({"predicted_label": [labels[i] for i in best],
                         "probability": probs.max(axis=1).round(6)})


@exits_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="textclf predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("texts", nargs="*", help="texts to label (or use --input)")
    parser.add_argument("--model", default="models/classifier", help="model folder")
    parser.add_argument("--input", help="CSV, TSV, JSON Lines or Parquet file of texts")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--output", help="where to write --input's rows with predictions "
                                         "(CSV or JSON Lines by extension)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto")
    args = parser.parse_args(argv)
    if bool(args.texts) == bool(args.input):
        raise UserError("give either texts as arguments or --input FILE (not both)")
    if args.input and not args.output:
        raise UserError("--input needs --output FILE (.csv or .jsonl)")

    quiet_transformers()
    device = choose_device()
    model, tokenizer, info = load_classifier(args.model, device)
    if args.input:
        rows = read_table(args.input, [args.text_column])
        texts = rows[args.text_column]
        bad = texts.isna() | ~texts.map(lambda v: isinstance(v, str))
        if bad.any():
            raise DataError(f"{args.input}: column {args.text_column!r}, row "
                            f"{int(bad.idxmax()) + 1}: expected text, found {texts[bad].iloc[0]!r}")
        texts = texts.tolist()
    else:
        rows, texts = pd.DataFrame({"text": args.texts}), args.texts
    result = label_texts(model, tokenizer, texts, info["labels"],
                         info["params"]["model"]["max_length"], device, args.batch_size,
                         args.precision)
    labelled = pd.concat([rows.reset_index(drop=True), result], axis=1)
    if args.output:
        write_predictions(labelled, Path(args.output))
        print(f"predict: {len(labelled)} rows -> {args.output}", file=sys.stderr)
    else:
        for record in labelled.to_dict(orient="records"):
            print(json.dumps(record, ensure_ascii=False))


def write_predictions(frame: pd.DataFrame, path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise UserError(f"{path}: unsupported output type {suffix!r}; expected .csv or .jsonl")
    with atomic_file(path) as scratch:
        if suffix == ".csv":
            frame.to_csv(scratch, index=False)
        else:
            frame.to_json(scratch, orient="records", lines=True, force_ascii=False)


if __name__ == "__main__":
    main()
