"""Command `report`: one offline HTML page and a Markdown summary comparing DVC experiments.

`build_report` is pure (experiment records in, HTML and Markdown out); `collect` reads the
records from `dvc exp show --json` and from each experiment's git commit.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textclf.charts import bar_chart, escape, heatmap, line_chart
from textclf.errors import UserError, exits_on_user_error
from textclf.outputs import atomic_file

HEADLINE = ("f1_macro", "accuracy", "f1_weighted", "best.val_f1_macro", "best_epoch")
CURVES = {"loss": "training loss", "val_accuracy": "validation accuracy",
          "val_f1_macro": "validation macro-F1"}
TOP_BARS = 20


@dataclass(frozen=True)
class Experiment:
    """One finished row of `dvc exp show`, with the files the report draws."""
    rev: str
    name: str                      # -n name, DVC's made-up name, or the baseline's branch
    named: bool                    # a person chose the name; else the row is described
    baseline: str                  # rev of the commit it started from (its own for a baseline)
    params: dict[str, Any]         # "train.batch_size" -> 16
    metrics: dict[str, float]      # "f1_macro" (test), "best.val_f1_macro" (training)
    per_class_f1: dict[str, float] = field(default_factory=dict)
    curves: dict[str, list[float]] = field(default_factory=dict)   # CURVES key -> per epoch
    confusion: list[tuple[str, str]] = field(default_factory=list)  # (actual, predicted)

    @property
    def is_baseline(self) -> bool:
        return self.rev == self.baseline


def fmt(value: Any) -> str:
    if isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
        return ":".join(fmt(v) for v in value)       # class_ratio [2, 1, 1] -> 2:1:1
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.4g}"
    return "null" if value is None else str(value)


def _short_keys(keys: list[str]) -> dict[str, str]:
    """'train.batch_size' -> 'batch_size', unless another key ends the same way."""
    last = [key.rsplit(".", 1)[-1] for key in keys]
    return {key: (tail if last.count(tail) == 1 else key) for key, tail in zip(keys, last)}


def changed_params(exps: list[Experiment]) -> list[str]:
    keys = dict.fromkeys(key for e in exps for key in e.params)
    return [key for key in keys if len({fmt(e.params.get(key)) for e in exps}) > 1]


def display_names(exps: list[Experiment]) -> dict[str, str]:
    """rev -> the one label used everywhere: the -n name, else what changed from the baseline."""
    by_rev = {e.rev: e for e in exps}
    labels = {}
    for e in exps:
        base = by_rev.get(e.baseline)
        diff = [] if e.named or base is None else changed_params([base, e])
        short = _short_keys(diff)
        labels[e.rev] = ", ".join(f"{short[k]}={fmt(e.params.get(k))}" for k in diff) or e.name
    repeated = Counter(labels.values())    # e.g. a re-run with the same params
    return {rev: (f"{text} [{by_rev[rev].name}]" if repeated[text] > 1 else text)
            + (" (baseline)" if by_rev[rev].is_baseline else "") for rev, text in labels.items()}


def rank(exps: list[Experiment], sort_by: str, ascending: bool = False) -> list[Experiment]:
    known = {key for e in exps for key in e.metrics}
    if sort_by not in known:
        raise UserError(f"--sort-by {sort_by}: no experiment has that metric "
                        f"(known: {', '.join(sorted(known)) or 'none'})")
    scored = sorted((e for e in exps if sort_by in e.metrics),
                    key=lambda e: e.metrics[sort_by], reverse=not ascending)
    return scored + [e for e in exps if sort_by not in e.metrics]


def build_report(exps: list[Experiment], sort_by: str = "f1_macro", ascending: bool = False,
                 skipped: tuple[str, ...] = ()) -> tuple[str, str]:
    """(HTML page, Markdown summary) for finished experiments; `skipped` names the others."""
    ranked = rank(exps, sort_by, ascending)
    label = display_names(exps)
    params = changed_params(exps)
    metrics = [sort_by, *(m for m in HEADLINE if m != sort_by and
                          any(m in e.metrics for e in exps))]
    board = (["#", "experiment", "DVC name", *metrics, *_short_keys(params).values()],
             [[str(i), label[e.rev], f"{e.name} {e.rev[:7]}",
               *(fmt(e.metrics.get(m, "-")) for m in metrics),
               *(fmt(e.params.get(p)) for p in params)] for i, e in enumerate(ranked, 1)])
    # The experiment to look at closely: the best one that is not itself a baseline.
    best = next((e for e in ranked if not e.is_baseline and sort_by in e.metrics), ranked[0])
    pair = [best, *(e for e in exps if e.rev == best.baseline and e is not best)]
    classes = list(dict.fromkeys(c for e in pair for c in e.per_class_f1))
    per_class = (["class", *(label[e.rev] for e in pair)],
                 [[c, *(fmt(e.per_class_f1.get(c, "-")) for e in pair)] for c in classes])
    title = f"{len(exps)} experiment{'s' * (len(exps) != 1)}, sorted by {sort_by}"
    lines = [f"Top: **{label[ranked[0].rev]}** ({sort_by} "
             f"{fmt(ranked[0].metrics.get(sort_by, '-'))}).",
             f"Compared below: **{label[best.rev]}**"
             + (f" against **{label[pair[1].rev]}**." if len(pair) > 1 else "."),
             f"Failed or unfinished, not ranked: {', '.join(skipped)}." if skipped else ""]
    md = "\n\n".join(filter(None, [f"# Experiments: {title}", *lines, _md_table(*board),
                                   "## Per-class F1 on the test set", _md_table(*per_class),
                                   "Training curves and confusion matrices: see the HTML page."]))
    shown = ranked[:TOP_BARS] + [e for e in ranked[TOP_BARS:] if e.is_baseline]
    leaders = bar_chart(f"{sort_by}, top {min(TOP_BARS, len(exps))} of {len(exps)}"
                        + (" and the baseline" if len(shown) > TOP_BARS else ""),
                        [label[e.rev] for e in shown],
                        {sort_by: [e.metrics.get(sort_by) for e in shown]})
    css = ["best" if e is best else "baseline" if e.is_baseline else "" for e in ranked]
    body = [f"<h1>Experiments: {escape(title)}</h1>",
            *(re.sub(r"[*][*](.*?)[*][*]", r"<b>\1</b>", f"<p>{escape(line)}</p>")
              for line in lines if line),
            "<h2>Leaderboard</h2>", leaders, _html_table(*board, css),
            f"<h2>{escape(' against '.join(label[e.rev] for e in pair))}</h2>",
            _comparison_charts({label[e.rev]: e for e in pair}, classes)]
    return PAGE.format(title=escape(title), body="\n".join(body)), md + "\n"


def _comparison_charts(runs: dict[str, Experiment], classes: list[str]) -> str:
    """Per-class F1, training curves and confusion matrices of the best run and its baseline."""
    per_class = bar_chart("Per-class F1 on the test set", classes,
                          {n: [e.per_class_f1.get(c) for c in classes] for n, e in runs.items()},
                          vmax=1.0)
    curves = [line_chart(f"{text} per epoch", {n: e.curves.get(key, []) for n, e in runs.items()})
              for key, text in CURVES.items()]
    matrices = [heatmap("Test confusion matrix", n, classes, e.confusion)
                for n, e in runs.items() if e.confusion]
    return "\n".join(['<div class="charts">', per_class, *filter(None, curves),
                      '</div><div class="charts">', *matrices, "</div>"])


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Experiments: {title}</title>
<style>body{{font:14px sans-serif;margin:24px;color:#222}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
td:nth-child(2),th:nth-child(2){{text-align:left}} tr.best{{background:#e6f4ea}}
tr.baseline td:nth-child(2){{font-weight:bold}}
.charts{{display:flex;flex-wrap:wrap;gap:16px;margin:12px 0}}
svg text{{font:11px sans-serif}} svg text.t{{font:bold 13px sans-serif}}</style>
</head><body>
{body}
</body></html>
"""


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(str(c).replace("|", "\\|") for c in line) + " |"
                     for line in lines)


def _html_table(header: list[str], rows: list[list[str]], classes: list[str]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "\n".join(f'<tr class="{css}">' + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>"
                     for row, css in zip(rows, classes))
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>"


# --- I/O: records from `dvc exp show --json` and the experiments' git commits ---------------


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree}
    return {k: v for key, sub in tree.items() for k, v in _flatten(sub, f"{prefix}{key}.").items()}


def made_up_by_dvc(name: str) -> bool:
    """True for the adjective-noun names DVC invents for runs without `-n`."""
    from dvc.repo.experiments.utils import gen_random_name

    # DVC's word lists are constants of its generator; if that changes, use their shape.
    words = [c for c in gen_random_name.__code__.co_consts if isinstance(c, tuple)]
    first, _, second = name.partition("-")
    if len(words) == 2:
        return any(first in a and second in b for a, b in (words, words[::-1]))
    return re.fullmatch(r"[a-z]{5}-[a-z]{4}", name) is not None


def _git_files(repo: Path, specs: list[str]) -> dict[str, str | None]:
    """'rev:path' -> text (None if missing), through one `git cat-file --batch`."""
    out = subprocess.run(["git", "cat-file", "--batch"], cwd=repo, capture_output=True,
                         input="".join(f"{s}\n" for s in specs).encode(), check=True).stdout
    files, pos = {}, 0
    for spec in specs:
        end = out.index(b"\n", pos)
        header = out[pos:end].split()
        if header[-1] == b"missing":
            files[spec], pos = None, end + 1
        else:
            size = int(header[2])
            files[spec], pos = out[end + 1:end + 1 + size].decode(), end + 2 + size
    return files


def finished_rows(entries: list[dict]) -> tuple[list[tuple[dict, str]], list[str]]:
    """(row, baseline rev) for each baseline and finished experiment; names of the rest."""
    rows, skipped = {}, []
    for entry in entries:
        if entry["rev"] == "workspace":    # uncommitted: `dvc exp save` makes it a row
            continue
        rows.setdefault(entry["rev"], (entry, entry["rev"]))
        for group in entry.get("experiments") or []:
            state = (group.get("executor") or {}).get("state") or "success"
            for row in group.get("revs") or []:
                if row.get("error") or state != "success":
                    state = "failed" if row.get("error") else state
                    skipped.append(f"{row.get('name') or row['rev'][:7]} ({state})")
                else:    # one commit can show twice, e.g. as an experiment and a branch
                    rows.setdefault(row["rev"], (row, entry["rev"]))
    return list(rows.values()), skipped


def collect(repo: Path, train_dir: str, evaluate_dir: str,
            all_commits: bool = False) -> tuple[list[Experiment], list[str]]:
    """Finished experiments and baselines of `dvc exp show`, and the names of the others."""
    cmd = ["dvc", "exp", "show", "--json", *(["--all-commits"] if all_commits else [])]
    shown = subprocess.run(cmd, cwd=repo, capture_output=True, text=True)
    if shown.returncode != 0:
        raise UserError(f"`{' '.join(cmd)}` failed in {repo}: {shown.stderr.strip()}")
    rows, skipped = finished_rows(json.loads(shown.stdout))
    # metrics/ is git-tracked (cache: false), so each experiment's commit holds its plot data.
    paths = {"loss": f"{train_dir}/plots/metrics/train/loss.tsv",
             "val_accuracy": f"{train_dir}/plots/metrics/val/accuracy.tsv",
             "val_f1_macro": f"{train_dir}/plots/metrics/val/f1_macro.tsv",
             "confusion": f"{evaluate_dir}/plots/sklearn/confusion_matrix.json"}
    files = _git_files(repo, [f"{row['rev']}:{p}" for row, _ in rows for p in paths.values()])
    exps = []
    for row, baseline in rows:
        data, rev = row.get("data") or {}, row["rev"]
        metric_files = {path: (m or {}).get("data") or {}
                        for path, m in (data.get("metrics") or {}).items()}
        scores = dict(metric_files.get(f"{evaluate_dir}/metrics.json", {}))
        per_class = scores.pop("per_class", None) or {}
        name = row.get("name") or rev[:7]
        exps.append(Experiment(
            rev=rev, name=name, baseline=baseline,
            named=rev == baseline or not made_up_by_dvc(name),
            params={(k if file == "params.yaml" else f"{file}:{k}"): v
                    for file, content in (data.get("params") or {}).items()
                    for k, v in _flatten(content.get("data") or {}).items()},
            metrics={**_flatten(metric_files.get(f"{train_dir}/metrics.json", {})),
                     **_flatten(scores)},
            per_class_f1={c: v["f1"] for c, v in per_class.items()},
            curves={k: [float(line.split("\t")[-1]) for line in
                        (files[f"{rev}:{paths[k]}"] or "").splitlines()[1:] if line]
                    for k in CURVES},
            confusion=[(r["actual"], r["predicted"])
                       for r in json.loads(files[f"{rev}:{paths['confusion']}"] or "[]")]))
    return exps, skipped


@exits_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="textclf report", description=__doc__)
    parser.add_argument("--sort-by", default="f1_macro",
                        help="metric to rank by, e.g. accuracy or best.val_f1_macro")
    parser.add_argument("--ascending", action="store_true", help="lower is better")
    parser.add_argument("-A", "--all-commits", action="store_true",
                        help="experiments of every commit, not only of HEAD")
    parser.add_argument("--train-dir", default="metrics/train", help="train's dvclive dir")
    parser.add_argument("--evaluate-dir", default="metrics/evaluate",
                        help="evaluate's dvclive dir")
    parser.add_argument("--html", default="reports/experiments.html")
    parser.add_argument("--markdown", default="reports/experiments.md")
    args = parser.parse_args(argv)

    exps, skipped = collect(Path.cwd(), args.train_dir, args.evaluate_dir, args.all_commits)
    if not exps:
        raise UserError("no finished experiments: run `dvc repro` or `dvc exp run` first")
    page, summary = build_report(exps, args.sort_by, args.ascending, tuple(skipped))
    for path, text in ((args.html, page), (args.markdown, summary)):
        with atomic_file(path) as scratch:
            scratch.write_text(text, encoding="utf-8")
    print(f"report: {len(exps)} experiments, {len(skipped)} unfinished -> "
          f"{args.html}, {args.markdown}")


if __name__ == "__main__":
    main()
