"""Command `select`: choose the texts worth labelling next, for a person to label.

    textclf select logs/predictions -n 200 --out selected.csv --label-studio tasks.json \\
        --exclude data/prepared/train.parquet
    textclf select new-texts.csv -n 200 --out selected.csv

SOURCE is the --log-dir of `textclf serve` (its prediction log holds each text's calibrated
probabilities as served; texts labelled through its feedback log are skipped) or a CSV,
TSV, JSON Lines or Parquet file of texts (labelled here with --model, calibrated).
Texts in an --exclude file (the training data) or a --labelled file (a labels file or a
Label Studio export) are skipped, as the same text once normalised, and so is every repeat.

Strategies (textclf.monitoring.selection): random (the default) draws N texts;
diverse-margin takes the --pool-factor x N texts whose two most probable classes are
closest, then N of them spread over the model's own sentence embeddings (k-center greedy);
margin and entropy take the N least sure. None takes a text at least --max-similarity
(cosine) similar to one already taken. On SST-5 diverse-margin did not beat random at
1,500 labels (docs/labelling.md), hence the default.

Writes --out, a CSV: request_id, index, text, predicted_label, probability, score
(higher: less sure) and an empty `label` column to fill in. For a log, that file, once
labelled, goes back with `textclf feedback import`; for a file, request_id is empty and
index is the text's row (from 1). --label-studio writes Label Studio tasks with the
model's answers as pre-annotations, and beside them (`NAME.config.xml`) the labelling
interface to paste into the project's settings; `textclf feedback import` reads the
project's JSON export back.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from textclf.canonical import canonical_text
from textclf.data.dataset import DataError, read_table
from textclf.data.label_studio import labelling_config, prediction_tasks, read_export
from textclf.errors import UserError, exits_on_user_error
from textclf.flags import integer, number
from textclf.model.embeddings import sentence_embeddings
from textclf.model.loading import weights_version
from textclf.monitoring.inputs import log_record
from textclf.monitoring.answers import read_feedback, scan_predictions
from textclf.monitoring.log_reading import DamagedLines, json_record, prediction_logs
from textclf.monitoring.selection import (DEFAULT_STRATEGY, MAX_SIMILARITY, POOL_FACTOR,
                                          STRATEGIES, select, unseen_rows)
from textclf.outputs import atomic_file, check_outputs, write_json
from textclf.params import PRECISIONS

# A spreadsheet takes a cell beginning with one of these for a formula (OWASP, "CSV
# Injection"): served texts come from anyone who can reach /predict.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
COLUMNS = ["request_id", "index", "text", "predicted_label", "probability", "score", "label"]


@dataclass(frozen=True)
class Pool:
    """The texts to choose from, with what the model answered for each."""
    texts: list[str]
    probabilities: np.ndarray           # (N, C) in the model's label order
    predicted: list[str]                # the label answered, and its probability
    top: list[float]
    request_ids: list[str]              # "" for a file's texts
    indices: list[int]                  # index in the request, or row in the file (from 1)
    model_versions: list[str]
    labelled: set[str]                  # normalised texts the log's feedback labels
    labelled_rows: int = 0              # logged texts left out as labelled by feedback


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="textclf select", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path,
                        help="a prediction log folder (`textclf serve --log-dir`) or a "
                             "CSV, TSV, JSON Lines or Parquet file of texts")
    parser.add_argument("-n", "--count", type=integer(1, 1_000_000), required=True,
                        metavar="N", help="texts to choose (1 to 1000000)")
    parser.add_argument("--out", type=Path, required=True, help="the CSV of chosen texts")
    parser.add_argument("--label-studio", type=Path, metavar="TASKS.json",
                        help="also write Label Studio tasks (and TASKS.config.xml)")
    parser.add_argument("--model", default="models/classifier",
                        help="model folder: its embeddings, labels, and for a file its "
                             "probabilities (default: models/classifier)")
    parser.add_argument("--strategy", choices=STRATEGIES, default=DEFAULT_STRATEGY,
                        help=f"how to choose (default: {DEFAULT_STRATEGY})")
    parser.add_argument("--exclude", type=Path, action="append", default=[], metavar="FILE",
                        help="skip texts of this file's `text` column, e.g. the training "
                             "split (repeatable)")
    parser.add_argument("--labelled", type=Path, action="append", default=[], metavar="FILE",
                        help="skip texts already labelled: a file with a `text` column or a "
                             "Label Studio JSON export (repeatable)")
    parser.add_argument("--text-column", default=None,
                        help="SOURCE file's text column (default: text)")
    parser.add_argument("--pool-factor", type=integer(1, 1000), default=POOL_FACTOR,
                        help=f"texts shortlisted and embedded, as a multiple of N (default "
                             f"{POOL_FACTOR})")
    parser.add_argument("--max-similarity", type=number(0, 1, above_low=True),
                        default=MAX_SIMILARITY,
                        help=f"cosine similarity from which a text is a near-duplicate of "
                             f"one chosen (default {MAX_SIMILARITY})")
    parser.add_argument("--seed", type=integer(0, 2**32 - 1), default=0,
                        help="seed of --strategy random")
    parser.add_argument("--batch-size", type=integer(1, 100_000), default=64,
                        help="texts per forward pass (default 64)")
    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="how a file's texts are labelled (as `textclf predict`; "
                             "default: auto)")
    parser.add_argument("--strict", action="store_true",
                        help="refuse a log with a damaged line instead of skipping it "
                             "(a log SOURCE only)")
    return parser.parse_args(argv)


@exits_on_user_error
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    check_paths(args)
    seen = excluded_texts(args.exclude, args.labelled)
    damaged = DamagedLines(strict=args.strict)
    if args.source.is_dir():
        model, tokenizer, info, device = load_model(args.model)
        pool = read_log(args.source, list(info.labels), damaged)
    else:
        texts = read_texts(args.source, args.text_column or "text")  # fails before loading
        labeller = load_labeller(args)
        model, tokenizer, info, device = (labeller.model, labeller.tokenizer, labeller.info,
                                          labeller.device)
        pool = label_file(texts, labeller)
    if damaged.count:
        print(f"select: {damaged.message()}", file=sys.stderr)
    candidates = unseen_rows(pool.texts, seen | pool.labelled)
    total = len(pool.texts) + pool.labelled_rows
    if not len(candidates):
        raise UserError(f"{args.source}: no text left to choose: all {total} are in "
                        f"--exclude or --labelled files or already labelled")

    def embed(rows: np.ndarray) -> np.ndarray:
        return sentence_embeddings(model, tokenizer, [pool.texts[i] for i in rows],
                                   info.max_length, batch_size=args.batch_size, device=device)

    chosen = select(pool.probabilities, args.count, args.strategy, embed,
                    candidates=candidates, pool_factor=args.pool_factor,
                    max_similarity=args.max_similarity, seed=args.seed)
    frame = chosen_frame(pool, chosen.rows, chosen.scores)
    write_outputs(args, frame, list(info.labels))
    if len(frame) == args.count:
        short = ""
    elif len(candidates) < args.count:
        short = f"; only {len(candidates)} candidate{'s' * (len(candidates) != 1)}"
    else:
        short = f"; only {len(frame)} left after near-duplicates"
    print(f"select: {len(frame)} of {len(candidates)} candidate texts by {args.strategy}"
          f"{short} ({total - len(candidates)} of {total} repeated, excluded or labelled; "
          f"{chosen.near_duplicates} near-duplicates of a chosen text left out)\n  -> "
          f"{args.out}{f', {args.label_studio}' if args.label_studio else ''}",
          file=sys.stderr)
    if formulas := sum(text.startswith(FORMULA_STARTS) for text in frame["text"]):
        print(f"select: warning: {formulas} chosen text{'s' * (formulas != 1)} "
              f"begin{'s' * (formulas == 1)} with "
              f"=, +, -, @ or a tab: a spreadsheet opening {args.out} may run them as "
              f"formulas (they stay as written, since they are data); import the file as "
              f"text, or label in Label Studio", file=sys.stderr)


def check_paths(args: argparse.Namespace) -> None:
    """Refuse, before the model loads, flags that do not apply to SOURCE, and outputs of
    the wrong type or that would overwrite an input (a filled-in labels file given back
    with --labelled, say) or each other."""
    outputs = [("--out", args.out, ".csv"), ("--label-studio", args.label_studio, ".json")]
    for flag, path, suffix in outputs:
        if path is not None and path.suffix.lower() != suffix and not path.is_dir():
            raise UserError(f"{flag} {path}: expected a {suffix} file, found "
                            f"{path.suffix or 'no extension'!r}")
    if not args.source.exists():
        raise UserError(f"{args.source}: no such file or folder; expected a prediction log "
                        f"folder (`textclf serve --log-dir`) or a file of texts")
    if args.source.is_dir():
        for flag, value in (("--text-column", args.text_column),
                            ("--precision", args.precision)):
            if value is not None:
                raise UserError(f"{flag} applies to a SOURCE file of texts; {args.source} is "
                                f"a prediction log folder, whose texts and probabilities "
                                f"are as served")
    elif args.strict:
        raise UserError(f"--strict applies to a prediction log folder; {args.source} is a "
                        f"file")
    written = [(flag, path) for flag, path, _ in outputs if path is not None]
    if args.label_studio is not None:
        written.append(("--label-studio's labelling config", config_path(args.label_studio)))
    read = ([("SOURCE", args.source)] if args.source.is_file() else []) + [
        (flag, path) for flag, paths in (("--exclude", args.exclude),
                                         ("--labelled", args.labelled)) for path in paths]
    check_outputs(written, read)


def load_model(folder: str):
    """(model, tokenizer, TrainingInfo, device): a log's texts need only embeddings."""
    from textclf.model.loading import load_classifier, quiet_transformers
    from textclf.model.precision import choose_device

    quiet_transformers()
    device = choose_device()
    model, tokenizer, info = load_classifier(folder, device)
    return model.to(device), tokenizer, info, device


def load_labeller(args: argparse.Namespace):
    """The Labeller of --model: a file's calibrated probabilities; its PyTorch model
    gives the embeddings, so the folder loads once."""
    from textclf.model.labeller import Labeller
    from textclf.model.loading import quiet_transformers

    quiet_transformers()
    return Labeller.load(args.model, args.precision or "auto", batch_size=args.batch_size)


def read_log(folder: Path, labels: list[str], damaged: DamagedLines) -> Pool:
    """Every logged text answered by a model with `labels` (its probabilities as served),
    and the texts the feedback log has labels for."""
    files = prediction_logs(folder)
    answered = {(f.request_id, f.index) for f in read_feedback(folder, damaged)}
    texts, probs, predicted, top, ids, indices, versions = [], [], [], [], [], [], []
    labelled: set[str] = set()
    other = labelled_rows = 0
    for request_id, index, where, line in scan_predictions(files, damaged):
        found = json_record(line, where, damaged)
        if found is None:
            continue
        record = log_record(found, where)
        if (request_id, index) in answered:
            labelled.add(canonical_text(record.text))
            labelled_rows += 1
        elif record.probabilities is None or set(record.probabilities) != set(labels):
            other += 1
        else:
            texts.append(record.text)
            probs.append([record.probabilities[label] for label in labels])
            predicted.append(record.label)
            top.append(record.probability)
            ids.append(request_id)
            indices.append(index)
            versions.append(record.model_version)
    if not texts:
        why = (f"; {other} were answered by a model with other labels than "
               f"{', '.join(labels)} (or without per-class probabilities)" if other else "")
        if damaged.count:
            why += f". {damaged.message()}"
        raise UserError(f"{folder}: the prediction logs ({len(files)} file"
                        f"{'s' * (len(files) != 1)}) hold no unlabelled predictions to "
                        f"choose from{why}")
    if other:
        print(f"select: skipped {other} logged texts answered by a model with other labels "
              f"(or without per-class probabilities)", file=sys.stderr)
    return Pool(texts, np.array(probs, dtype=np.float64), predicted, top, ids, indices,
                versions, labelled, labelled_rows)


def read_texts(path: Path, column: str) -> list[str]:
    texts = read_table(path, [column])[column].tolist()
    for row, text in enumerate(texts, start=1):
        if not isinstance(text, str):
            raise DataError(f"{path}: column {column!r}, row {row}: expected text, found "
                            f"{text!r:.40} ({type(text).__name__})")
        if not canonical_text(text):
            raise DataError(f"{path}: column {column!r}, row {row}: expected text, found "
                            f"{text!r:.40} (empty, whitespace-only or invisible-only)")
    return texts


def label_file(texts: list[str], labeller) -> Pool:
    """A file's texts with the calibrated probabilities the Labeller gives them."""
    from textclf.model.labeller import top_labels       # torch: imported when labelling

    probs = labeller.probabilities(texts)
    labels, top = top_labels(probs, labeller.labels)
    return Pool(texts, probs, labels, top.tolist(), [""] * len(texts),
                list(range(1, len(texts) + 1)),
                [weights_version(labeller.folder)] * len(texts), set())


def excluded_texts(excluded: list[Path], labelled: list[Path]) -> set[str]:
    """Normalised texts of the --exclude and --labelled files."""
    seen: set[str] = set()
    for flag, paths in (("--exclude", excluded), ("--labelled", labelled)):
        for path in paths:
            try:
                if flag == "--labelled" and path.suffix.lower() == ".json":
                    texts = [row.text for row in read_export(path).rows]
                else:
                    texts = read_table(path, ["text"])["text"].tolist()
            except DataError as err:
                raise DataError(f"{flag} {err}") from None
            seen.update(canonical_text(t) for t in texts if isinstance(t, str))
    return seen


def chosen_frame(pool: Pool, rows: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({
        "request_id": [pool.request_ids[i] for i in rows],
        "index": [pool.indices[i] for i in rows],
        "text": [pool.texts[i] for i in rows],
        "predicted_label": [pool.predicted[i] for i in rows],
        "probability": [round(pool.top[i], 6) for i in rows],
        "score": np.round(scores, 6),
        "label": "",
        "model_version": [pool.model_versions[i] for i in rows]})


def write_outputs(args: argparse.Namespace, frame: pd.DataFrame, labels: list[str]) -> None:
    """--out, and with --label-studio the tasks and their labelling config beside them."""
    with atomic_file(args.out) as scratch:
        frame[COLUMNS].to_csv(scratch, index=False)
    if args.label_studio:
        write_json(args.label_studio, prediction_tasks(frame))
        with atomic_file(config_path(args.label_studio)) as scratch:
            scratch.write_text(labelling_config(labels), encoding="utf-8")


def config_path(tasks: Path) -> Path:
    return tasks.with_suffix(".config.xml")


if __name__ == "__main__":
    main()
