"""Stage `evaluate`: score the saved model on the test split.

`evaluate.precision` picks how: `auto` (PyTorch, bf16 where it pays, as training decides),
a forced fp32/bf16/fp16, or `int8`: the ONNX Runtime model that `predict` and `serve`
answer with on CPUs without AMX, to see its own scores (`dvc exp run -S
evaluate.precision=int8`).

Scores use the calibrated probabilities (the temperature `train` fitted on the validation
split, textclf.model.calibration); the predicted labels are the same either way. The
calibration scores are reported before and after it: ECE (15 bins), class-wise ECE, NLL and
Brier score in calibration.json (not in metrics.json, whose every key `dvc exp show`
adds as a column); the reliability diagram's bins under plots/reliability/.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd

from textclf.canonical import canonical_text, normalize_label
from textclf.data.dataset import DataError, clip, describe_rows, read_table
from textclf.errors import exits_on_user_error
from textclf.metrics import (ECE_BINS, calibration_metrics, classification_metrics,
                             reliability_table)
from textclf.model.calibration import Calibration
from textclf.model.labeller import Labeller, top_labels
from textclf.outputs import atomic_dir, check_output_dir, write_json
from textclf.params import load_params


@dataclass(frozen=True)
class Evaluation:
    """A model's scores on a labelled test set, before and after its calibration."""
    probs: np.ndarray            # (N, C) calibrated where the model has a calibration
    actual_ids: np.ndarray       # (N,) the true labels' ids
    predicted: list[str]
    scores: dict                 # classification_metrics: headline and per class
    calibration: dict            # calibration_scores: ECE, NLL, Brier before and after


def evaluate(raw: np.ndarray, actual: list[str], labels: list[str],
             calibration: Calibration | None) -> Evaluation:
    """Score the model's own probabilities `raw` (N, C) of texts whose labels are `actual`."""
    probs = calibration.apply(raw) if calibration else raw
    label_ids = {label: i for i, label in enumerate(labels)}
    actual_ids = np.array([label_ids[label] for label in actual], dtype=np.int64)
    predicted, _ = top_labels(probs, labels)
    return Evaluation(probs, actual_ids, predicted,
                      classification_metrics(actual, predicted, labels),
                      calibration_scores(actual_ids, raw, probs, calibration))


def misclassified(texts: list[str], actual: list[str], probs: np.ndarray,
                  labels: list[str]) -> pd.DataFrame:
    """Wrong predictions, most confident first: the ones most worth reading."""
    predicted = probs.argmax(axis=1)
    label_ids = {label: i for i, label in enumerate(labels)}
    actual_ids = np.array([label_ids[a] for a in actual])
    frame = pd.DataFrame({
        "text": texts,
        "actual": actual,
        "predicted": [labels[i] for i in predicted],
        "confidence": probs.max(axis=1).round(4),
        "prob_actual": probs[np.arange(len(actual_ids)), actual_ids].round(4),
    })
    return frame[predicted != actual_ids].sort_values("confidence", ascending=False,
                                                      kind="stable")


def calibration_scores(y_true: np.ndarray, raw: np.ndarray, calibrated: np.ndarray,
                       calibration: Calibration | None) -> dict:
    """The calibration report: temperature (None: the folder has none) and ece,
    classwise_ece, nll and brier of the calibrated and the model's own probabilities."""
    return {"method": calibration.method if calibration else None,
            "temperature": calibration.temperature if calibration else None,
            "bins": ECE_BINS,
            "calibrated": calibration_metrics(calibrated, y_true),
            "uncalibrated": calibration_metrics(raw, y_true)}


def headline(scores: dict) -> dict[str, float]:
    """What metrics.json holds: `dvc exp show` shows every key of it in a column, and the
    changed params must still fit beside them in 120 columns, so the three scores only
    (the calibration scores are in calibration.json: `dvc metrics show FILE`)."""
    return {name: scores[name] for name in ("accuracy", "f1_macro", "f1_weighted")}


def read_test(path: str, labels: list[str]) -> pd.DataFrame:
    """The labelled test file (`text`, `label`; CSV, TSV, JSON Lines or Parquet), labels
    spelt as the model spells them (textclf.canonical.normalize_label: `3.0` is `3`); a
    row without text, or with a label the model lacks, is refused naming its rows."""
    frame = read_table(path, ["text", "label"])
    empty = ~frame["text"].map(lambda v: isinstance(v, str) and bool(canonical_text(v)))
    if empty.any():
        rows = (np.flatnonzero(empty) + 1).tolist()
        raise DataError(f"{path}: column 'text', {describe_rows(rows)}: expected text to "
                        f"label, found {clip(frame['text'][empty].iloc[0])!r} (not text, "
                        f"or empty, whitespace-only or invisible-only)")
    spelt = {normalize_label(label): label for label in labels}
    found = frame["label"].map(
        lambda v: None if isinstance(v, (list, dict)) else spelt.get(normalize_label(v)))
    unknown = found.isna()
    if unknown.any():
        rows = (np.flatnonzero(unknown) + 1).tolist()
        raise DataError(f"{path}: column 'label', {describe_rows(rows)}: expected one of the "
                        f"model's labels ({', '.join(labels)}), found "
                        f"{clip(frame['label'][unknown].iloc[0])!r}")
    return pd.DataFrame({"text": frame["text"].astype(str).tolist(),
                         "label": found.astype(str).tolist()})


@exits_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="textclf evaluate", description=__doc__)
    parser.add_argument("--params", default="params.yaml",
                        help="params file (default: params.yaml)")
    parser.add_argument("--model-dir", required=True, help="model folder written by train")
    parser.add_argument("--test", required=True,
                        help="labelled test file: text and label columns (CSV, TSV, JSON "
                             "Lines or Parquet), such as the test split prepare writes")
    parser.add_argument("--live-dir", required=True, help="dvclive folder for metrics/plots")
    args = parser.parse_args(argv)

    from dvclive import Live

    params = load_params(args.params).evaluate
    check_output_dir("--live-dir", args.live_dir, "metrics.json",
                     [("--model-dir", args.model_dir), ("--test", args.test),
                      ("--params", args.params)])
    # `auto` never picks int8 here: the scores dvc.lock records describe the model, not
    # one CPU's int8 kernels (evaluate.precision: int8 asks for them by name).
    labeller = Labeller.load(args.model_dir, params.precision, batch_size=params.batch_size,
                             auto_int8=False, calibrated=False)
    labels = labeller.labels
    test = read_test(args.test, labels)
    raw = labeller.probabilities(test["text"].tolist())  # the model's own probabilities
    calibration = labeller.info.calibrator()
    actual = test["label"].tolist()
    scored = evaluate(raw, actual, labels, calibration)
    probs, predicted, scores = scored.probs, scored.predicted, scored.scores
    absent = [label for label in labels if label not in set(actual)]
    if absent:
        print(f"evaluate: warning: {len(absent)} of the model's labels have no example in "
              f"{args.test} ({', '.join(absent)}): macro-F1 averages over every label, "
              f"and counts each of them as 0", file=sys.stderr)
    report, actual_ids = scored.calibration, scored.actual_ids

    with atomic_dir(args.live_dir) as live_dir:
        with Live(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None) as live:
            for name, value in headline(scores).items():
                live.log_metric(name, value, plot=False)
            live.log_sklearn_plot("confusion_matrix", actual, predicted,
                                  name="confusion_matrix.json")
        # Per-class scores stay out of DVC's metrics, so `dvc exp show` keeps to the
        # headline numbers; the report and this file have them.
        write_json(live_dir / "per_class.json", scores["per_class"])
        write_json(live_dir / "calibration.json", report)
        for name, table in (("calibrated", probs), ("uncalibrated", raw)):
            write_json(live_dir / "plots" / "reliability" / f"{name}.json",
                       reliability_table(table, actual_ids))
        misclassified(test["text"].tolist(), actual, probs, labels).to_csv(
            live_dir / "misclassified.csv", index=False)
    after, before = report["calibrated"], report["uncalibrated"]
    print(f"evaluate: {len(test)} test examples, accuracy {scores['accuracy']:.4f}, "
          f"macro-F1 {scores['f1_macro']:.4f}, ECE {before['ece']:.4f} -> {after['ece']:.4f} "
          + (f"(temperature {calibration.temperature:.3f})" if calibration
             else "(the model folder has no calibration)"))


if __name__ == "__main__":
    main()
