"""Command `feedback`: true labels for served predictions, and the live accuracy they give.

    textclf feedback import labels.csv --log-dir logs/predictions
    textclf feedback import label-studio-export.json --log-dir logs/predictions
    textclf feedback report --log-dir logs/predictions --fail-on-worse

`import` appends labels collected elsewhere to the feedback log (`<log-dir>/feedback/`,
where `POST /feedback` of `textclf serve` writes): a CSV, TSV or JSON Lines file with
columns request_id, index, label or text, label, or a Label Studio JSON export
(textclf.serving.label_files). Every row is matched to the prediction log first; one bad
row and nothing is written.

`report` joins the labels to the logged predictions (the last label of a text wins) and
scores each model version: accuracy with a 95% Wilson interval, macro-F1 with a 95%
bootstrap interval, recall per class. Verdict: "worse than test" when the accuracy
interval lies wholly below the test accuracy (`--test-metrics`), "too few labels" under
`--min-labels`, else "no evidence of a drop" (textclf.monitoring.live). Writes Markdown
(`--out`) and JSON metrics for `dvc metrics show` (`--metrics`); `--fail-on-worse` exits
1 when the current model version is worse than its test accuracy (for CI and cron).
Damaged lines of either log (a write cut short) are skipped, counted and named on stderr;
`--strict` refuses them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
from pathlib import Path

from textclf.errors import UserError, exits_on_user_error
from textclf.flags import integer
from textclf.monitoring.answers import FEEDBACK_FOLDER
from textclf.monitoring.live import MIN_LABELS, live_summary, read_test_accuracy
from textclf.monitoring.log_reading import DamagedLines, log_files, prediction_logs
from textclf.outputs import atomic_file, check_outputs, write_json


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="textclf feedback", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="action", required=True, metavar="{import,report}")
    imports = commands.add_parser("import", help="append labels from a file to the feedback log")
    imports.add_argument("file", help="CSV, TSV or JSON Lines (request_id, index, label or "
                                      "text, label), or a Label Studio JSON export")
    report = commands.add_parser("report", help="live accuracy per model version")
    for sub in (imports, report):
        sub.add_argument("--log-dir", default="logs/predictions",
                         help="the --log-dir of `textclf serve` (default: logs/predictions)")
    report.add_argument("--test-metrics", default="metrics/evaluate/metrics.json",
                        help="the model's test metrics (its `accuracy` is the baseline)")
    report.add_argument("--out", default="reports/live.md", help="the Markdown report")
    report.add_argument("--metrics", default="metrics/live.json", help="JSON metrics for DVC")
    report.add_argument("--min-labels", type=integer(1, 10**9), default=MIN_LABELS,
                        help=f"labelled texts a version needs for a verdict (default "
                             f"{MIN_LABELS})")
    report.add_argument("--seed", type=integer(0, 2**32 - 1), default=0,
                        help="seed of the bootstrap (0 to 2**32-1)")
    report.add_argument("--fail-on-worse", action="store_true",
                        help="exit with status 1 when the current model version is worse "
                             "than its test accuracy (for CI and cron)")
    report.add_argument("--strict", action="store_true",
                        help="refuse a log with a damaged line (a write cut short), naming "
                             "file and line; by default such lines are skipped and counted")
    return parser.parse_args(argv)


def import_labels(file: str, log_dir: str) -> str:
    """Check every row of `file` against the logs, then append them all; a summary line."""
    from textclf.serving.feedback import FeedbackLog, feedback_lines
    from textclf.serving.label_files import matched_feedback, read_label_file, report_errors

    check_log_dir(log_dir)
    feedback = Path(log_dir, FEEDBACK_FOLDER)
    if feedback.exists() and not feedback.is_dir():
        raise UserError(f"--log-dir {log_dir}: {feedback} is a file; expected the folder "
                        f"the feedback log is appended to")
    now = dt.datetime.now(dt.timezone.utc)
    rows, errors, skipped = read_label_file(file)
    items, unmatched = matched_feedback(rows, log_dir, now)   # the rows that did read
    if errors or unmatched:     # every bad row at once, in file order
        raise report_errors(file, sorted(errors + unmatched, key=row_number))
    if not items:
        raise UserError(f"{file}: no labels to import ({skipped} tasks without an annotation)")
    written = FeedbackLog(Path(log_dir)).append(now, feedback_lines(now, items,
                                                                    f"import:{Path(file).name}"))
    unlabelled = f" ({skipped} tasks without an annotation skipped)" if skipped else ""
    return (f"feedback import: {len(items)} label{'s' * (len(items) != 1)} from {file}"
            f"{unlabelled}\n  -> {written}")


def row_number(error: str) -> int:
    """The row or task number an import error names (`FILE, row 3, ...`), for its order."""
    found = re.search(r", (?:row|task|line) (\d+)", error)
    return int(found[1]) if found else 0


def check_log_dir(log_dir: str) -> None:
    """A folder holding the prediction logs of `textclf serve`, or UserError."""
    if not Path(log_dir).is_dir():
        raise UserError(f"--log-dir {log_dir}: no such folder; expected the --log-dir of "
                        f"`textclf serve`")
    prediction_logs(log_dir, "--log-dir")


@exits_on_user_error
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.action == "import":
        print(import_labels(args.file, args.log_dir), file=sys.stderr)
        return
    check_log_dir(args.log_dir)
    logs = [*log_files(args.log_dir, "predictions"),
            *log_files(Path(args.log_dir) / FEEDBACK_FOLDER, "feedback")]
    check_outputs([("--out", args.out), ("--metrics", args.metrics)],
                  [("--test-metrics", args.test_metrics), *(("--log-dir", log) for log in logs)])
    damaged = DamagedLines(strict=args.strict)
    summary = live_summary(args.log_dir, read_test_accuracy(args.test_metrics),
                           args.test_metrics, args.min_labels, args.seed, damaged)
    if damaged.count:
        print(f"feedback report: {damaged.message()}", file=sys.stderr)
    with atomic_file(args.out) as scratch:
        scratch.write_text(summary.to_markdown(), encoding="utf-8")
    write_json(args.metrics, summary.metrics())
    print(f"feedback report: {summary.verdict}\n  -> {args.out}, {args.metrics}",
          file=sys.stderr)
    if args.fail_on_worse and summary.worse:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
