"""Command `report`: compare DVC experiments on one offline HTML page and in Markdown or JSON.

`compare` and the renderers are pure (experiment records in, text out); the records come
from `textclf.reporting.experiments`, which reads them through DVC's public API. Names,
labels and params are users' words: both pages escape them.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from textclf.errors import UserError, exits_on_user_error
from textclf.reporting.pages import md_code_block, md_table, md_text
from textclf.outputs import atomic_file, check_outputs
from textclf.reporting.charts import bar_chart, escape, heatmap, line_chart
from textclf.reporting.experiments import (CURVES, Experiment, Listed, RunFiles, ranked_by,
                                           read_experiments, to_yaml)
from textclf.reporting.pages import heading, html_page, html_table, paragraph, plain
from textclf.reporting.replicates import Replicates, replicate_groups, spread_table

HEADLINE = ("f1_macro", "accuracy", "f1_weighted", "best.val_f1_macro", "best.val_accuracy",
            "best_epoch", "train_seconds")
TOP_BARS = 20


@dataclass(frozen=True)
class Comparison:
    """What the page shows: runs grouped by the test data they were scored on, then ranked."""
    sort_by: str
    groups: list[list[Experiment]]     # one leaderboard per test set, best first
    best: Experiment                   # the run compared with its baseline below
    pair: list[Experiment]             # best, then its baseline if it was read
    not_ranked: list[str]              # "name (why)": failed, queued, params/metrics mismatch
    replicates: list[Replicates] = ()  # runs that differ only in their seeds

    def shown_metrics(self, exps: list[Experiment]) -> list[str]:
        """The sort metric, then the headline metrics that any of `exps` has."""
        return [self.sort_by, *(m for m in HEADLINE if m != self.sort_by
                                and any(m in e.metrics for e in exps))]


def fmt(value: Any) -> str:
    """A metric: integers without a point, others to 4 significant digits."""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.4g}"
    return to_yaml(value) if isinstance(value, (list, dict, bool)) or value is None else str(value)


def short_keys(keys: list[str]) -> dict[str, str]:
    """'train.batch_size' -> 'batch_size', unless another key ends the same way."""
    last = [key.rsplit(".", 1)[-1] for key in keys]
    return {key: (tail if last.count(tail) == 1 else key) for key, tail in zip(keys, last)}


def changed_params(exps: list[Experiment]) -> list[str]:
    keys = dict.fromkeys(key for e in exps for key in e.params)
    return [key for key in keys if len({to_yaml(e.params.get(key)) for e in exps}) > 1]


def label(e: Experiment) -> str:
    return f"{e.name} (baseline)" if e.is_baseline else e.name


def changes(e: Experiment, exps: list[Experiment]) -> str:
    """What a run changed from its baseline, as `-S` would set it: 'batch_size=16'."""
    base = next((b for b in exps if b.rev == e.baseline and b is not e), None)
    diff = changed_params([base, e]) if base else []
    short = short_keys(diff)
    return ", ".join(f"{short[k]}={to_yaml(e.params.get(k))}" for k in diff)


def compare(exps: list[Experiment], sort_by: str = "f1_macro", ascending: bool = False,
            unfinished: tuple[str, ...] = ()) -> Comparison:
    """Group by test data (scores on different test sets are not comparable), then rank."""
    known = {key for e in exps for key in e.metrics}
    if sort_by not in known:
        raise UserError(f"--sort-by {sort_by}: no experiment has that metric "
                        f"(known: {', '.join(sorted(known)) or 'none'})")
    stale = [e for e in exps if e.stale]
    fresh = [e for e in exps if not e.stale]
    if not fresh:
        raise UserError("no experiment's params match its dvc.lock: run `dvc repro` and "
                        f"commit, or `dvc exp run` ({stale[0].name}: {stale[0].stale})")
    by_data: dict[str, list[Experiment]] = {}
    for e in fresh:                       # the first listed (HEAD's) test set comes first
        by_data.setdefault(e.data, []).append(e)
    groups = [ranked_by(group, sort_by, ascending) for group in by_data.values()]
    best = next((e for e in groups[0] if not e.is_baseline and sort_by in e.metrics),
                groups[0][0])
    pair = [best, *(e for e in groups[0] if e.rev == best.baseline and e is not best)]
    not_ranked = [*unfinished, *(f"{e.name} (params and metrics from different runs: "
                                 f"{e.stale})" for e in stale)]
    return Comparison(sort_by, groups, best, pair, not_ranked, replicate_groups(fresh))


def data_title(group: list[Experiment], groups: list[list[Experiment]]) -> str:
    """The test set a leaderboard ranks on: its data.path, and the data params that are
    one value within each leaderboard and differ between them (data.test_size=0.3, say;
    not data.class_ratio, which varies within one), then the data's short hash."""
    keys = sorted({key for g in groups for e in g for key in e.params
                   if key.startswith("data.")})
    values = {key: [{to_yaml(e.params.get(key)) for e in g} for g in groups] for key in keys}
    differing = [key for key in keys if key != "data.path"
                 and all(len(found) == 1 for found in values[key])
                 and len(set().union(*values[key])) > 1]
    named = ", ".join(f"{key}={to_yaml(group[0].params.get(key, '?'))}"
                      for key in ["data.path", *differing])
    return f"test set of {named} ({group[0].data.split('+')[0][:8] or 'unknown'})"


def _summary(c: Comparison, count: int, esc: Callable[[str], str]) -> list[str]:
    """The lines above the tables; `esc` makes a user's words safe where they go (`str`
    for the HTML, which `paragraph` escapes)."""
    top = c.groups[0][0]
    where = (f" on the {esc(data_title(c.groups[0], c.groups))}" if len(c.groups) > 1
             else "")
    lines = [f"Top{where}: **{esc(label(top))}** ({esc(c.sort_by)} "
             f"{esc(fmt(top.metrics.get(c.sort_by, '-')))}).",
             f"Compared below: **{esc(label(c.best))}**"
             + (f" against **{esc(label(c.pair[1]))}**." if len(c.pair) > 1 else ".")]
    if len(c.groups) > 1:
        lines.insert(0, f"Warning: these {count} runs were scored on {len(c.groups)} different "
                        "test sets (other data or split params), so each set has its own "
                        "leaderboard: scores on different test sets are not comparable.")
    if c.not_ranked:
        lines.append(f"Not ranked: {esc('; '.join(c.not_ranked))}.")
    return lines


def leaderboard(group: list[Experiment], c: Comparison) -> tuple[list[str], list[list[str]]]:
    params = changed_params(group)
    metrics = c.shown_metrics(group)
    header = ["#", "experiment", "rev", *metrics, *short_keys(params).values()]
    rows = [[str(i), label(e), e.rev[:7], *(fmt(e.metrics.get(m, "-")) for m in metrics),
             *(to_yaml(e.params.get(p)) for p in params)] for i, e in enumerate(group, 1)]
    return header, rows


def render_markdown(c: Comparison) -> str:
    count = sum(map(len, c.groups))
    title = f"{count} experiment{'s' * (count != 1)}, sorted by {c.sort_by}"
    blocks = [f"# Experiments: {md_text(title)}", *_summary(c, count, md_text)]
    for group in c.groups:
        if len(c.groups) > 1:
            blocks.append(f"## Leaderboard: {md_text(data_title(group, c.groups))}")
        blocks.append(md_table(*leaderboard(group, c)))
    if c.replicates:
        blocks += ["## Across seeds (mean and range of runs that differ only in the seed)",
                   md_table(*_spread(c))]
    classes = list(dict.fromkeys(k for e in c.pair for k in e.per_class_f1))
    blocks += ["## Per-class F1 on the test set",
               md_table(["class", *(label(e) for e in c.pair)],
                        [[k, *(fmt(e.per_class_f1.get(k, "-")) for e in c.pair)]
                         for k in classes]),
               f"## Params of {md_text(label(c.pair[-1]))}",
               md_code_block(params_yaml(c.pair[-1]), "yaml"),
               "Training curves and confusion matrices: see the HTML page."]
    return "\n\n".join(blocks) + "\n"


def _spread(c: Comparison) -> tuple[list[str], list[list[str]]]:
    return spread_table(list(c.replicates),
                        c.shown_metrics([e for g in c.replicates for e in g.runs]))


def params_yaml(e: Experiment) -> str:
    """params.yaml's sections with one `key: value` line each, values as YAML."""
    lines, section = [], None
    for key, value in e.params.items():
        head, _, rest = key.partition(".")
        if rest and head != section:
            lines.append(f"{head}:")
        section = head if rest else None
        lines.append(f"  {rest}: {to_yaml(value)}" if rest else f"{head}: {to_yaml(value)}")
    return "\n".join(lines) + "\n"


def render_html(c: Comparison) -> str:
    count = sum(map(len, c.groups))
    title = f"{count} experiment{'s' * (count != 1)}, sorted by {c.sort_by}"
    body = [heading(1, f"Experiments: {title}"),
            *(paragraph(line, "warn" if line.startswith("Warning") else "")
              for line in _summary(c, count, plain))]
    for group in c.groups:
        body.append(heading(2, "Leaderboard" if len(c.groups) == 1
                            else f"Leaderboard: {data_title(group, c.groups)}"))
        shown = group[:TOP_BARS] + [e for e in group[TOP_BARS:] if e.is_baseline]
        body.append(bar_chart(f"{c.sort_by}, top {min(TOP_BARS, len(group))} of {len(group)}"
                              + (" and the baseline" if len(shown) > TOP_BARS else ""),
                              [label(e) for e in shown],
                              {c.sort_by: [e.metrics.get(c.sort_by) for e in shown]}))
        css = ["best" if e is c.best else "baseline" if e.is_baseline else "" for e in group]
        body.append(html_table(*leaderboard(group, c), css))
    if c.replicates:
        body += [heading(2, "Across seeds (mean and range of runs that differ only in the seed)"),
                 html_table(*_spread(c))]
    what = changes(c.best, c.pair)
    body += [heading(2, " against ".join(map(label, c.pair)) + (f" ({what})" if what else "")),
             _comparison_charts(c.pair),
             heading(2, f"Params of {label(c.pair[-1])}"),
             f"<pre>{escape(params_yaml(c.pair[-1]))}</pre>"]
    return html_page(f"Experiments: {title}", "\n".join(body))


def _comparison_charts(pair: list[Experiment]) -> str:
    """Per-class F1, training curves and confusion matrices of the best run and its baseline."""
    runs = {label(e): e for e in pair}
    classes = list(dict.fromkeys(k for e in pair for k in e.per_class_f1))
    per_class = bar_chart("Per-class F1 on the test set", classes,
                          {n: [e.per_class_f1.get(k) for k in classes] for n, e in runs.items()},
                          vmax=1.0)
    curves = [line_chart(f"{text} per epoch", {n: e.curves.get(key, []) for n, e in runs.items()})
              for key, text in CURVES.items()]
    matrices = [heatmap("Test confusion matrix", n, classes, e.confusion)
                for n, e in runs.items() if e.confusion]
    return "\n".join(['<div class="charts">', per_class, *filter(None, curves),
                      '</div><div class="charts">', *matrices, "</div>"])


def to_json(c: Comparison) -> dict:
    """The comparison for scripts: groups of ranked runs with their params and metrics."""
    def run(e: Experiment) -> dict:
        return {"name": e.name, "rev": e.rev, "baseline": e.baseline,
                "is_baseline": e.is_baseline, "metrics": e.metrics, "params": e.params,
                "per_class_f1": e.per_class_f1}
    return {"sort_by": c.sort_by, "best": c.best.name,
            "groups": [{"data": g[0].data, "data_path": g[0].params.get("data.path"),
                        "ranked": [run(e) for e in g]} for g in c.groups],
            "not_ranked": c.not_ranked,
            "replicates": [{"runs": [e.name for e in g.runs], "seeds": g.seeds,
                            "spread": {m: g.spread(m) for m in
                                       c.shown_metrics(g.runs) if g.spread(m)}}
                           for g in c.replicates]}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="textclf report",
        description="Compare the DVC experiments of HEAD (or of every commit): a ranked "
                    "leaderboard per test set, and the best run against its baseline.")
    parser.add_argument("--sort-by", default="f1_macro",
                        help="metric to rank by, e.g. accuracy or best.val_f1_macro "
                             "(default: %(default)s)")
    parser.add_argument("--ascending", action="store_true", help="lower is better")
    parser.add_argument("-A", "--all-commits", action="store_true",
                        help="experiments of every commit on every branch, not only of HEAD")
    parser.add_argument("--train-dir", default=RunFiles.train_dir,
                        help="train's dvclive folder (default: %(default)s)")
    parser.add_argument("--evaluate-dir", default=RunFiles.evaluate_dir,
                        help="evaluate's dvclive folder (default: %(default)s)")
    parser.add_argument("--html", default="reports/experiments.html",
                        help="where to write the HTML page (default: %(default)s)")
    parser.add_argument("--markdown", default="reports/experiments.md",
                        help="where to write the Markdown summary (default: %(default)s)")
    parser.add_argument("--json", action="store_true",
                        help="print the comparison as JSON on stdout instead of writing files")
    return parser


@exits_on_user_error
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if not args.json:
        for flag, path, suffixes in (("--html", args.html, (".html", ".htm")),
                                     ("--markdown", args.markdown, (".md", ".markdown"))):
            if Path(path).suffix.lower() not in suffixes:
                raise UserError(f"{flag} {path}: expected a {suffixes[0]} file, found "
                                f"{Path(path).suffix or 'no extension'!r}")
        check_outputs([("--html", args.html), ("--markdown", args.markdown)])
    files = RunFiles(args.train_dir, args.evaluate_dir)
    exps, unfinished = read_experiments(str(Path.cwd()), files, args.all_commits)
    if not exps:
        raise UserError("no finished experiments: run `dvc repro` or `dvc exp run` first")
    check_folders_found(exps, files)
    c = compare(exps, args.sort_by, args.ascending, tuple(describe(u) for u in unfinished))
    if args.json:
        print(json.dumps(to_json(c), indent=2))
        return
    for path, text in ((args.html, render_html(c)), (args.markdown, render_markdown(c))):
        with atomic_file(path) as scratch:
            scratch.write_text(text, encoding="utf-8")
    ranked = sum(map(len, c.groups))
    print(f"report: {ranked} experiment{'s' * (ranked != 1)} ranked, {len(c.not_ranked)} "
          f"not ranked -> {args.html}, {args.markdown}")


def check_folders_found(exps: list[Experiment], files: RunFiles) -> None:
    """A metrics folder that no run has is a mistyped flag, not a run without scores."""
    for flag, folder, path, default in (
            ("--evaluate-dir", files.evaluate_dir, files.metrics[0], RunFiles.evaluate_dir),
            ("--train-dir", files.train_dir, files.metrics[1], RunFiles.train_dir)):
        if not any(path in e.found for e in exps):
            raise UserError(f"{flag} {folder}: no run has {path} (of {len(exps)} read); "
                            f"expected the folder dvc.yaml's stage writes its metrics.json "
                            f"to (default: {default})")


def describe(run: Listed) -> str:
    return f"{run.name} ({run.state})"


if __name__ == "__main__":
    main()
