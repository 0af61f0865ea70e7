"""Command `drift`: does what the model sees now differ from what it was trained on?

    textclf drift --current logs/predictions          # the --log-dir of `textclf serve`
    textclf drift --current new_texts.csv --text-column review

Writes an HTML page and Markdown (`--out-dir`) with one verdict on top, and a JSON
metrics file for `dvc metrics show`. The reference defaults to the training split; the
predicted labels of the current window are compared with the model's predictions on its
own test split. The measures and decision rules are in drift_stats and drift_report.
Beside the verdict, the window's accuracy and macro-F1 are estimated without labels (CBPE
and ATC, the latter fitted on the validation split; textclf.monitoring.estimate), next to
the test split's scores, and marked unreliable where the texts changed: the domain
classifier, or the texts' distance to the training texts in the model's own middle layer
against the validation split's (textclf.monitoring.novelty). Damaged lines of a
prediction log (a write cut short) are skipped, counted and named; --strict refuses them.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from textclf.canonical import canonical_text
from textclf.errors import UserError, exits_on_user_error
from textclf.flags import integer
from textclf.monitoring.estimate import ATCThreshold, fit_atc
from textclf.monitoring.inputs import (LoggedWindow, Predictions, label_texts, parse_time,
                                       read_labels, read_prediction_logs, read_texts)
from textclf.monitoring.log_reading import DamagedLines
from textclf.monitoring.novelty import REFERENCE_ROWS, NoveltyResult, window_novelty
from textclf.monitoring.page import render
from textclf.monitoring.report import DriftReport, Sources, check_sizes, compare, sample
from textclf.outputs import atomic_file, check_outputs, write_json
from textclf.params import PRECISIONS


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="textclf drift", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--current", required=True,
                        help="texts seen now: a CSV, TSV, JSON Lines or Parquet file, or a "
                             "folder of `textclf serve` prediction logs "
                             "(predictions-YYYY-MM-DD[-N].jsonl)")
    parser.add_argument("--since", help="with a log folder: only texts answered at or after "
                                        "this ISO-8601 time, e.g. 2026-11-21 (UTC)")
    parser.add_argument("--reference", default="data/prepared/train.parquet",
                        help="texts the model was trained on (default: the training split)")
    parser.add_argument("--test", default="data/prepared/test.parquet",
                        help="the model's test split: its predictions there are the baseline "
                             "for the predicted-label distribution (default: %(default)s)")
    parser.add_argument("--validation", default=None,
                        help="labelled split the ATC threshold is fitted on (default: the "
                             "model's validation split, else data/prepared/val.parquet); "
                             "never the test split, which the estimate is shown beside")
    parser.add_argument("--model", default="models/classifier",
                        help="model folder (default: %(default)s)")
    parser.add_argument("--text-column", default="text", help="text column of a --current file")
    parser.add_argument("--reference-text-column", default="text",
                        help="text column of --reference")
    parser.add_argument("--out-dir", default="reports",
                        help="where drift.html and drift.md go (default: %(default)s)")
    parser.add_argument("--metrics", default="metrics/drift.json",
                        help="JSON metrics for DVC (default: %(default)s)")
    parser.add_argument("--max-rows", type=integer(10, 1_000_000), default=10_000,
                        help="texts per side the domain classifier uses at most (sampled; "
                             "10 to 1000000, default: 10000)")
    parser.add_argument("--seed", type=integer(0, 2**32 - 1), default=0,
                        help="seed of the held-out split (0 to 2**32-1)")
    parser.add_argument("--batch-size", type=integer(1, 100_000), default=64,
                        help="texts per forward pass when the model predicts (default: 64)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="auto: what `serve` and `predict` choose here, so the test-split "
                             "baseline comes from the engine that answered the logged texts")
    parser.add_argument("--raw-probabilities", action="store_true",
                        help="compare the model's own probabilities, not the calibrated ones "
                             "serve and predict answer with by default")
    parser.add_argument("--fail-on-drift", action="store_true",
                        help="exit with status 1 when drift is detected (for CI and cron)")
    parser.add_argument("--strict", action="store_true",
                        help="refuse a prediction log with a damaged line (a write cut "
                             "short), naming file and line; by default such lines are "
                             "skipped and counted")
    return parser.parse_args(argv)


def build(args: argparse.Namespace, damaged: DamagedLines | None = None) -> DriftReport:
    """Read both windows, predict where the data has no predictions, compare; damaged log
    lines are counted in `damaged` (refused if it is strict)."""
    damaged = DamagedLines(strict=args.strict) if damaged is None else damaged
    current_path = Path(args.current)
    if not current_path.exists():
        raise UserError(f"--current {current_path}: no such file or folder; expected a data "
                        f"file or the prediction log folder of `textclf serve`")
    since = parse_time(args.since, "--since") if args.since else None
    if since and not current_path.is_dir():
        raise UserError(f"--since works on a folder of prediction logs; --current "
                        f"{current_path} is a file")
    logged = (read_prediction_logs(current_path, since, damaged) if current_path.is_dir()
              else None)
    current_texts = None if logged else read_texts(current_path, args.text_column, "--current")
    reference = read_texts(args.reference, args.reference_text_column, "--reference")
    test_texts = read_texts(args.test, "text", "--test")
    test_labels = read_labels(args.test, len(test_texts))

    if logged:
        source = (f"{current_path} ({logged.files} log file{'s' * (logged.files > 1)}, "
                  f"answered {logged.first:%Y-%m-%d %H:%M} to {logged.last:%Y-%m-%d %H:%M} UTC)")
    else:
        source = str(current_path)
    sources = Sources(reference=str(args.reference), current=source, test=str(args.test),
                      model_version="", damaged_lines=damaged.count)
    check_sizes(sources, len(reference), len(logged.predictions.texts) if logged else
                len(current_texts), len(test_texts))   # before the model loads

    from textclf.model.loading import weights_version

    labeller = load_labeller(args.model, args.precision, args.batch_size,
                             calibrated=not args.raw_probabilities)
    test = label_texts(labeller, test_texts)
    version = weights_version(args.model)
    notes = [damaged.message()] if damaged.count else []
    validation = read_validation(validation_split(args, labeller.info), notes)
    atc = fit_validation_atc(labeller, *validation) if validation else None
    if labeller.calibration is None:
        notes.append("The probabilities are not calibrated (--raw-probabilities, or a model "
                     "folder without a fitted temperature): the accuracy estimate assumes "
                     "calibrated ones; its test-split row shows how far off that makes it.")
    untrusted = []
    if logged:
        current: Predictions = dataclasses.replace(
            logged.predictions, probabilities=logged.probability_matrix(labeller.labels))
        notes += served_notes(logged.model_versions, version, args.model)
        untrusted += logged_untrusted(logged, version, labeller.calibration is not None)
        if logged.model_versions:
            version = f"{', '.join(logged.model_versions)} (as logged by `textclf serve`)"
    else:
        current = label_texts(labeller, current_texts)
        version = f"{version} (the weights in {args.model})"
    untrusted += training_overlap(reference, current.texts, notes)
    sources = dataclasses.replace(sources, model_version=short_hashes(version))
    novelty = (measure_novelty(labeller, reference, validation[0], current.texts, args, notes)
               if validation else None)
    return compare(reference, test, current, labeller.labels, sources, seed=args.seed,
                   max_rows=args.max_rows, notes=[short_hashes(note) for note in notes],
                   test_labels=test_labels, atc=atc, novelty=novelty,
                   untrusted=[short_hashes(reason) for reason in untrusted])


# The share of a window's texts that are training texts above which the estimate is not
# trusted. On its own training texts the demo model is right far more often than its
# calibrated confidence says (accuracy 0.972, CBPE 0.811: 16 points), so a share s adds
# about 16 s points of error: 0.2 keeps it near 3.
MAX_TRAINING_SHARE = 0.2


def training_overlap(reference: Sequence[str], current: Sequence[str],
                     notes: list[str]) -> list[str]:
    """The share of `current` that are `reference` (training) texts once normalised: said
    in a note when any are, and a reason not to trust the estimate above
    MAX_TRAINING_SHARE."""
    training = {canonical_text(text) for text in reference}
    seen = sum(canonical_text(text) in training for text in current) / len(current)
    if not seen:
        return []
    notes.append(f"{seen:.0%} of the current texts are training texts (the same once "
                 f"normalised): the model is surer of those, and more often right, than "
                 f"of new ones.")
    return ([f"{seen:.0%} of the current texts are training texts, on which the model is "
             f"right more often than its calibrated confidence says (above "
             f"{MAX_TRAINING_SHARE:.0%})"] if seen > MAX_TRAINING_SHARE else [])


def logged_untrusted(logged: LoggedWindow, version: str, calibrated: bool) -> list[str]:
    """Why the logged probabilities are not what this report's estimators were fitted
    on: another model's answers (by sha256), or raw where it compares calibrated ones
    (or the other way round), as the log's `calibrated` field says."""
    reasons = []
    other = [v for v in logged.model_versions
             if v.startswith("sha256:") and v.split("+")[0] != version]
    if other:
        reasons.append(f"the logs hold answers of {', '.join(other)}, not of the model in "
                       f"--model ({version}), whose ATC threshold and test scores these are")
    kind = {True: "calibrated", False: "raw (serve --raw-probabilities, or a folder "
                                      "without a temperature)"}
    if len(logged.calibrated) > 1:
        reasons.append("the logs mix calibrated and raw probabilities")
    elif logged.calibrated and logged.calibrated[0] != calibrated:
        reasons.append(f"the logged probabilities are {kind[logged.calibrated[0]]} and this "
                       f"report compares {kind[calibrated].split(' (')[0]} ones "
                       f"({'without' if calibrated else 'with'} --raw-probabilities)")
    return reasons


def validation_split(args: argparse.Namespace, info) -> Path | None:
    """The labelled split ATC is fitted on: --validation, else the model's validation
    split, else data/prepared/val.parquet; None when none was given and the default is
    missing. Fitting on the test split would grade the estimate on its own answers."""
    if args.validation:
        path = Path(args.validation)
        if not path.is_file():
            raise UserError(f"--validation {path}: no such file; expected a labelled split "
                            f"(text and label columns), such as data/prepared/val.parquet")
    else:
        path = Path(info.validation_split or "data/prepared/val.parquet")
        if not path.is_file():
            return None
    if Path(args.test).is_file() and path.resolve() == Path(args.test).resolve():
        raise UserError(f"--validation {path} is the --test split; expected a labelled split "
                        f"the report does not compare against, such as the validation split")
    return path


def read_validation(path: Path | None, notes: list[str]
                    ) -> tuple[list[str], list[str], Path] | None:
    """(texts, gold labels, path) of the labelled validation split, or None (and a note)
    when there is none."""
    if path is None:
        notes.append("ATC and the texts' novelty were not computed: no validation split "
                     "found (give --validation).")
        return None
    texts = read_texts(path, "text", "--validation")
    gold = read_labels(path, len(texts))
    if gold is None:
        raise UserError(f"--validation {path}: no column 'label'; expected the labelled "
                        f"split ATC's threshold is fitted on")
    return texts, gold, path


def fit_validation_atc(labeller, texts: list[str], gold: list[str], path: Path
                       ) -> ATCThreshold:
    """ATC's threshold on the labelled split at `path` (its predictions from `labeller`)."""
    predicted = label_texts(labeller, texts)
    return fit_atc(np.asarray(predicted.top_probability),
                   np.asarray(predicted.labels) == np.asarray(gold), str(path))


def measure_novelty(labeller, reference: Sequence[str], validation: Sequence[str],
                    current: Sequence[str], args: argparse.Namespace, notes: list[str]
                    ) -> NoveltyResult:
    """The current texts' distance to the training texts against the validation split's,
    in the model's middle layer; the training texts sampled to REFERENCE_ROWS, the other
    two sides to --max-rows."""
    if len(reference) > REFERENCE_ROWS:
        notes.append(f"Novelty: nearest neighbours among a random {REFERENCE_ROWS:,} of the "
                     f"{len(reference):,} reference texts.")
    return window_novelty(labeller.model, labeller.tokenizer, labeller.info.max_length,
                          sample(reference, REFERENCE_ROWS, args.seed + 2),
                          sample(validation, args.max_rows, args.seed + 3),
                          sample(current, args.max_rows, args.seed + 1), args.batch_size)


def load_labeller(model: str, precision: str, batch_size: int, calibrated: bool = True):
    """The model folder as `serve` and `predict` load it (same engine choice)."""
    from textclf.model.labeller import Labeller

    if not Path(model).is_dir():
        raise UserError(f"--model {model}: no such model folder; expected the folder "
                        f"written by `textclf train` (run `dvc repro` or `dvc pull`)")
    return Labeller.load(model, precision, batch_size=batch_size, calibrated=calibrated)


def short_hashes(text: str) -> str:
    """sha256 digests cut to 12 hex digits for people, as git shortens commits."""
    return re.sub(r"\b(sha256:[0-9a-f]{12})[0-9a-f]{52}\b", r"\1", text)


def served_notes(served: tuple[str, ...], version: str, model: str) -> list[str]:
    """Warnings when the logged answers did not all come from the weights in `model`."""
    notes = []
    if len(served) > 1:
        notes.append(f"The logs hold predictions of {len(served)} model versions "
                     f"({', '.join(served)}); the window mixes them.")
    # A version set with `serve --model-version` is a free name: only sha256 ones compare.
    other = [v for v in served if v.startswith("sha256:") and v.split("+")[0] != version]
    if other:
        notes.append(f"{', '.join(other)} in the logs is not the model in {model} "
                     f"({version}): its test-split predictions are another model's.")
    return notes


@exits_on_user_error
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    html_path, md_path = Path(args.out_dir, "drift.html"), Path(args.out_dir, "drift.md")
    check_outputs([("--out-dir", html_path), ("--out-dir", md_path),
                   ("--metrics", args.metrics)],
                  [(flag, path) for flag, path in (
                      ("--current", args.current), ("--reference", args.reference),
                      ("--test", args.test), ("--validation", args.validation))
                   if path and Path(path).is_file()])
    damaged = DamagedLines(strict=args.strict)
    report = build(args, damaged)
    if damaged.count:
        print(f"drift: {damaged.message()}", file=sys.stderr)
    page, summary = render(report)
    for path, text in ((html_path, page), (md_path, summary)):
        with atomic_file(path) as scratch:
            scratch.write_text(text, encoding="utf-8")
    write_json(args.metrics, report.metrics())
    print(f"drift: {report.verdict}\n  -> {html_path}, {md_path}, {args.metrics}",
          file=sys.stderr)
    if args.fail_on_drift and report.drifted:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
