"""Command `audit`: which labels of the data look wrong, for a person to check.

    textclf audit                                # data.path of params.yaml
    textclf audit --data labelled.csv --label-column sentiment --folds 5 --epochs 3

Every example gets class probabilities from a model that never saw it: k-fold
cross-validation, each fold trained with `train`'s own loop and params (all but the epochs)
from `model.name` (textclf.training.cross_fit). Confident learning (Northcutt, Jiang and
Chuang, JAIR 2021; textclf.training.label_issues) then estimates how many labels of each
class are wrong and picks the suspects, ranked (`--rank-by combined`, the default) by the
mean of two ranks: the out-of-fold probability of the given label, and the area under the
margin while the folds' models trained on the example (AUM, Pleiss et al., NeurIPS 2020).
Texts that are the same once normalised but carry different labels are listed apart. The
suspects are candidates for a person to look at, not verdicts: a model trained for a few
epochs on the same data is wrong too, most of all on hard or ambiguous texts.

By default the whole data.path file is audited (train, validation and test rows alike) and
rows are numbered as in that file (from 1, after the header), the file one edits to fix a
label. The audit trains its own models and writes no model: models/classifier is untouched.

Writes --out (a CSV of suspects, most suspect first: rank, row, text, given_label,
suggested_label, self_confidence, suggested_probability, margin, training_margin, method),
--markdown (a
report section: counts, estimated noise per class, the top suspects, conflicting
duplicates) and --metrics (JSON for `dvc metrics show`).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from textclf.canonical import canonical_text, normalize_label
from textclf.data.dataset import DataError, clip, describe_rows, label_order, read_table
from textclf.errors import exits_on_user_error
from textclf.flags import integer
from textclf.model.loading import quiet_transformers
from textclf.outputs import atomic_file, check_outputs, write_json
from textclf.params import Params, load_params
from textclf.reporting.pages import md_table, md_text
from textclf.training.cross_fit import FoldDone, assign_folds, cross_fit
from textclf.training.label_issues import METHODS, RANKINGS, LabelIssues, find_label_issues

COLUMNS = ["rank", "row", "text", "given_label", "suggested_label", "self_confidence",
           "suggested_probability", "margin", "training_margin", "method"]
METHOD_NAMES = {"noise-rate": "confident learning, prune by noise rate",
                "both": "confident learning, prune by class and by noise rate",
                "self-confidence": "lowest self-confidence, as many as confident learning "
                                   "estimates"}
RANKING_NAMES = {"self-confidence": "by the out-of-fold probability of the given label",
                 "margin": "by the out-of-fold margin (the given label's probability minus "
                           "the largest other)",
                 "combined": "by the mean of two ranks: the out-of-fold probability of the "
                             "given label, and the area under the margin while the folds' "
                             "models trained on it (AUM, Pleiss et al., NeurIPS 2020)"}
# On the demo data, at the same cost, 3 folds of 4 epochs found more flipped labels than 5
# folds of 2 (precision@k 0.48 vs 0.35 at 5% noise; docs/audit.md): the folds' models must
# be good enough to disagree.
MAX_DEFAULT_EPOCHS = 4
CITATION = ("Northcutt, Jiang and Chuang, \"Confident Learning: Estimating Uncertainty in "
            "Dataset Labels\", JAIR 70, 2021")


@dataclasses.dataclass(frozen=True)
class Audit:
    """One audit's results: the examples, their out-of-fold probabilities, the suspects."""
    examples: pd.DataFrame          # text, label, key, row (from 1, in the file)
    labels: list[str]
    probs: np.ndarray               # (N, C) out-of-fold
    training_margin: np.ndarray     # (N,) AUM while the folds' models trained on it
    issues: LabelIssues
    method: str
    rank_by: str
    conflicts: list[dict]           # {"text", "labels": {label: [rows]}}

    def label_ids(self) -> np.ndarray:
        return self.examples["label"].map({l: i for i, l in enumerate(self.labels)}).to_numpy()


def read_examples(path: Path, text_column: str, label_column: str,
                  allowed: list | None) -> tuple[pd.DataFrame, list[str]]:
    """Examples (text, label, key, row) and the label order; unlike `prepare`, texts with two
    labels are kept (the audit lists them) and repeats are kept (each row is audited)."""
    frame = read_table(path, [text_column, label_column])
    text = frame[text_column].astype(object)
    key = text.map(lambda v: canonical_text(v) if isinstance(v, str) else "")
    _refuse(path, text_column, key.eq(""), "a non-blank text (a string)")
    label = frame[label_column].astype(object).map(
        lambda v: None if isinstance(v, (list, dict)) else normalize_label(v))
    _refuse(path, label_column, label.isna(), "a label (a string or a number)")
    if allowed is not None:
        names = [normalize_label(v) for v in allowed]
        _refuse(path, label_column, ~label.isin(names), f"a label in data.labels {names}")
    labels = [l for l in label_order(label.unique(), allowed) if l in set(label)]
    if len(labels) < 2:
        raise DataError(f"{path}: column {label_column!r} has one label only ({labels[0]!r}); "
                        f"expected at least 2 to audit")
    return pd.DataFrame({"text": text.astype(str), "label": label.astype(str), "key": key,
                         "row": frame.index + 1}), labels


def _refuse(path: Path, column: str, bad: pd.Series, expected: str) -> None:
    if bad.any():
        rows = (bad[bad].index + 1).tolist()
        raise DataError(f"{path}: column {column!r}, {describe_rows(rows)}: expected {expected}")


def check_folds(examples: pd.DataFrame, folds: int, path: Path, label_column: str) -> None:
    """Refuse, before any training and naming the rows, data that `folds` folds cannot
    split: a label with fewer examples than folds (a typo, often), or fewer distinct
    texts than folds."""
    counts = examples["label"].value_counts(sort=False)
    rare = counts[counts < folds]
    if len(rare):
        label = rare.idxmin()
        rows = examples.loc[examples["label"] == label, "row"].tolist()
        more = f" (and {len(rare) - 1} more such label(s))" if len(rare) > 1 else ""
        fewer = (f"--folds {int(counts.min())}" if counts.min() >= 2 else "fewer folds")
        raise DataError(f"{path}: column {label_column!r}, {describe_rows(rows)}: label "
                        f"{label!r} has {len(rows)} example(s){more}; {folds} folds need at "
                        f"least {folds} of each label (fix or remove the rows, or use "
                        f"{fewer})")
    if examples["key"].nunique() < folds:
        raise DataError(f"{path}: {examples['key'].nunique()} distinct text(s) cannot fill "
                        f"{folds} folds; expected at least {folds} (use fewer folds)")


def conflicting_duplicates(examples: pd.DataFrame) -> list[dict]:
    """Texts (the same once normalised) with more than one label: each label's rows."""
    labels_per_key = examples.groupby("key", sort=False)["label"].nunique()
    conflicted = examples[examples["key"].isin(labels_per_key[labels_per_key > 1].index)]
    return [{"text": group["text"].iloc[0],
             "labels": {label: rows["row"].tolist()
                        for label, rows in group.groupby("label", sort=False)}}
            for _, group in conflicted.groupby("key", sort=False)]


def audit(examples: pd.DataFrame, labels: list[str], params: Params, folds: int, epochs: int,
          method: str, rank_by: str, on_fold=lambda done: None, progress: bool = False) -> Audit:
    """Cross-fit, then find the suspects: the command's core, with no files."""
    label_ids = examples["label"].map({l: i for i, l in enumerate(labels)}).to_numpy()
    fold_of = assign_folds(label_ids, folds, params.train.seed, groups=examples["key"].tolist(),
                           labels=labels)
    fitted = cross_fit(examples["text"].tolist(), label_ids, labels, params.model,
                       dataclasses.replace(params.train, epochs=epochs), fold_of,
                       on_fold=on_fold, progress=progress)
    issues = find_label_issues(fitted.probs, label_ids, method, rank_by, fitted.training_margin)
    return Audit(examples, labels, fitted.probs, fitted.training_margin, issues, method,
                 rank_by, conflicting_duplicates(examples))


def suspects_table(result: Audit) -> pd.DataFrame:
    issues, rows = result.issues, result.issues.ranked
    suggested = issues.suggested[rows]
    return pd.DataFrame({
        "rank": np.arange(1, len(rows) + 1), "row": result.examples["row"].to_numpy()[rows],
        "text": result.examples["text"].to_numpy()[rows],
        "given_label": result.examples["label"].to_numpy()[rows],
        "suggested_label": [result.labels[j] for j in suggested],
        "self_confidence": issues.self_confidence[rows].round(4),
        "suggested_probability": result.probs[rows, suggested].astype(float).round(4),
        "margin": issues.margin[rows].round(4),
        "training_margin": result.training_margin[rows].round(4), "method": result.method},
        columns=COLUMNS)


def summary(result: Audit) -> dict:
    """Numbers only, for `dvc metrics show`."""
    n, issues = len(result.examples), result.issues
    return {"examples": n, "suspects": len(issues.ranked),
            "suspect_share": round(len(issues.ranked) / n, 4),
            "estimated_label_errors": round(issues.estimated_errors, 1),
            "estimated_noise_rate": round(issues.estimated_errors / n, 4),
            "noise_rate_per_class": dict(zip(result.labels,
                                             issues.noise_rates().round(4).tolist())),
            "out_of_fold_accuracy": round(float(
                (result.probs.argmax(axis=1) == result.label_ids()).mean()), 4),
            "conflicting_duplicates": {"texts": len(result.conflicts), "rows": sum(
                len(rows) for c in result.conflicts for rows in c["labels"].values())}}


def render_markdown(result: Audit, source: str, folds: int, epochs: int, model: str,
                    top: int) -> str:
    """The report section: what was done, the counts, then the tables."""
    facts = summary(result)
    table = suspects_table(result).head(top)
    blocks = [
        "## Label audit: suspects, not verdicts",
        f"{facts['examples']} examples of {md_text(source)}; each scored by a model that never "
        f"saw it ({folds}-fold cross-validation, {epochs} epoch(s) per fold, "
        f"{md_text(model)}; out-of-fold accuracy against the given labels "
        f"{facts['out_of_fold_accuracy']:.1%}).",
        f"**{facts['suspects']} suspects** ({facts['suspect_share']:.1%}): "
        f"{md_text(METHOD_NAMES[result.method])} ({md_text(CITATION)}). Confident learning "
        f"estimates that {facts['estimated_label_errors']:g} labels "
        f"({facts['estimated_noise_rate']:.1%}) are wrong. A suspect is a row whose label a "
        f"model confidently disagrees with, ranked {md_text(RANKING_NAMES[result.rank_by])}, "
        f"most suspect first: check each one by reading it; the model is wrong "
        f"too, most often on hard or ambiguous texts.",
        "### Estimated label noise per class", noise_table(result),
        f"### Top {len(table)} suspects (all of them in the CSV)",
        md_table(["rank", "row", "text", "given", "suggested", "p(given)", "p(suggested)",
                  "AUM"],
                 [[r.rank, r.row, clip(r.text, 120), r.given_label, r.suggested_label,
                   f"{r.self_confidence:.3f}", f"{r.suggested_probability:.3f}",
                   f"{r.training_margin:.3f}"]
                  for r in table.itertuples()]) if len(table) else "None.",
        "### Conflicting duplicates (the same text, once normalised, with different labels)",
        md_table(["text", "labels (rows)"],
                 [[clip(c["text"], 120), "; ".join(f"{label} ({describe_rows(rows)})"
                                                   for label, rows in c["labels"].items())]
                  for c in result.conflicts]) if result.conflicts else "None."]
    return "\n\n".join(blocks) + "\n"


def noise_table(result: Audit) -> str:
    """Per given label: rows, suspects, estimated noise rate, and the class its wrong labels
    most often truly are (the largest off-diagonal cell of its row of the joint)."""
    issues = result.issues
    noise = issues.noise_rates()
    off = issues.calibrated_joint - np.diag(np.diag(issues.calibrated_joint))
    suspected = result.label_ids()[issues.ranked]
    return md_table(["given label", "examples", "suspects", "estimated noise rate",
                     "its errors most often truly"],
                    [[label, int(issues.label_counts[i]), int((suspected == i).sum()),
                      f"{noise[i]:.1%}",
                      result.labels[int(off[i].argmax())] if off[i].max() > 0 else "-"]
                     for i, label in enumerate(result.labels)])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="textclf audit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file (params.yaml)")
    parser.add_argument("--data", type=Path, default=None,
                        help="a CSV, TSV, JSON Lines or Parquet file (default: data.path)")
    parser.add_argument("--text-column", help="default: data.text_column")
    parser.add_argument("--label-column", help="default: data.label_column")
    parser.add_argument("--folds", type=integer(2, 100), default=3,
                        help="cross-validation folds (default 3)")
    parser.add_argument("--epochs", type=integer(1, 1000), default=None,
                        help=f"epochs per fold (default: train.epochs, at most "
                             f"{MAX_DEFAULT_EPOCHS}); every other setting from train.*")
    parser.add_argument("--method", choices=METHODS, default="noise-rate",
                        help="which rows are suspects (default noise-rate; docs/audit.md)")
    parser.add_argument("--rank-by", choices=RANKINGS, default="combined",
                        help="order of the suspects, most suspect first (default combined: "
                             "the mean rank by self-confidence and by the training margin, "
                             "AUM)")
    parser.add_argument("--top", type=integer(0, 100_000), default=20,
                        help="suspects shown in the Markdown section (default 20)")
    parser.add_argument("--out", type=Path, default=Path("reports/audit.csv"),
                        help="the CSV of suspects (default reports/audit.csv)")
    parser.add_argument("--markdown", type=Path, default=Path("reports/audit.md"),
                        help="the report section (default reports/audit.md)")
    parser.add_argument("--metrics", type=Path, default=Path("metrics/audit.json"),
                        help="counts for `dvc metrics show` (default metrics/audit.json)")
    return parser.parse_args(argv)


@exits_on_user_error
def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    params = load_params(args.params)
    epochs = args.epochs or min(MAX_DEFAULT_EPOCHS, params.train.epochs)
    source = args.data or Path(params.data.path)
    if source.is_dir():
        raise DataError(f"{source}: a folder of split files; audit one of them with --data FILE")
    check_outputs([("--out", args.out), ("--markdown", args.markdown),
                   ("--metrics", args.metrics)],
                  [("--data" if args.data else "data.path", source), ("--params", args.params)])
    label_column = args.label_column or params.data.label_column
    examples, labels = read_examples(source, args.text_column or params.data.text_column,
                                     label_column,
                                     params.data.labels if args.data is None else None)
    check_folds(examples, args.folds, source, label_column)
    print(f"audit: {len(examples)} examples of {source}, {len(labels)} labels; {args.folds} "
          f"folds of {epochs} epoch(s) from {params.model.name}")

    def report(done: FoldDone) -> None:
        print(f"audit: fold {done.fold}/{done.folds}: trained on {done.trained_on}, scored "
              f"{done.scored} (accuracy {done.accuracy:.1%}, {done.seconds:.0f} s)")

    quiet_transformers()
    result = audit(examples, labels, params, args.folds, epochs, args.method,
                   args.rank_by, on_fold=report, progress=sys.stderr.isatty())
    with atomic_file(args.out) as scratch:
        suspects_table(result).to_csv(scratch, index=False)
    with atomic_file(args.markdown) as scratch:
        scratch.write_text(render_markdown(result, str(source), args.folds, epochs,
                                           params.model.name, args.top), encoding="utf-8")
    write_json(args.metrics, summary(result))
    facts = summary(result)
    print(f"audit: {facts['suspects']} suspects ({facts['suspect_share']:.1%}), "
          f"{facts['conflicting_duplicates']['texts']} conflicting duplicate text(s) -> "
          f"{args.out}, {args.markdown}, {args.metrics}; suspects, not verdicts: check each")


if __name__ == "__main__":
    main()
