"""The study report of `textclf tune`, as HTML (one offline file) and Markdown: every trial
with its params, state and epochs trained; the best value so far against the epochs trained
so far; each param's importance (Optuna's fANOVA); the pruned trials.

Only finished, unpruned trials compete for "best": a pruned trial's value is a score at
the epoch it stopped, not the score of a finished training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textclf.outputs import atomic_file
from textclf.params import load_params
from textclf.reporting.charts import PALETTE, escape
from textclf.reporting.pages import (heading, html_page, html_table, md_table, md_text,
                                     paragraph)
from textclf.sweeps.search_space import TuneConfig
from textclf.training.trial import import_optuna


@dataclass(frozen=True)
class TrialRow:
    number: int
    experiment: str
    state: str                     # complete | pruned | failed | interrupted | running
    params: dict[str, Any]         # params.yaml values
    value: float | None
    epochs_trained: int            # epochs this trial's run trained (reported)
    pruned_at_epoch: int | None
    error: str = ""
    repeat_of: int | None = None   # same params as this trial: not run again


@dataclass(frozen=True)
class StudySummary:
    name: str
    metric: str
    direction: str
    rows: list[TrialRow]
    progress: list[tuple[int, float]]      # (epochs trained so far, best value so far)
    importances: dict[str, float]
    importance_note: str
    grid_epochs: int | None                # what a full grid of the space would train

    @property
    def best(self) -> TrialRow | None:
        complete = [r for r in self.rows if r.state == "complete"]
        if not complete:
            return None
        sign = 1 if self.direction == "maximize" else -1
        return max(complete, key=lambda r: (sign * r.value, -r.number))

    @property
    def epochs_trained(self) -> int:
        return sum(r.epochs_trained for r in self.rows)

    def count(self, state: str) -> int:
        return sum(1 for r in self.rows if r.state == state)


def summarize(study, config: TuneConfig, base_epochs: int) -> StudySummary:
    """What the report shows, from the study's storage."""
    optuna = import_optuna()
    trials = study.get_trials(deepcopy=False)
    rows = [_row(study.study_name, t, config) for t in trials]
    order = sorted((t for t in trials if t.state.is_finished()),
                   key=lambda t: (t.datetime_complete, t.number))
    sign = 1 if config.direction == "maximize" else -1
    progress, epochs, best = [], 0, None
    for trial in order:
        epochs += len(trial.intermediate_values)
        if trial.state == optuna.trial.TrialState.COMPLETE and (
                best is None or sign * trial.value > sign * best):
            best = trial.value
        if best is not None:
            progress.append((epochs, best))
    importances, note = param_importances(study)
    return StudySummary(study.study_name, config.metric, config.direction, rows, progress,
                        importances, note, grid_epochs(config, base_epochs))


def _row(study_name: str, trial, config: TuneConfig) -> TrialRow:
    state = trial.state.name.lower()
    if state == "fail":
        state = "interrupted" if trial.user_attrs.get("interrupted") else "failed"
    params = {d.key: d.value(trial.params[d.key]) for d in config.space if d.key in trial.params}
    repeat_of = trial.user_attrs.get("repeat_of")
    experiment = f"{study_name}-{trial.number if repeat_of is None else repeat_of}"
    return TrialRow(trial.number, experiment, state, params,
                    trial.value if state in ("complete", "pruned") else None,
                    len(trial.intermediate_values), trial.user_attrs.get("pruned_at_epoch"),
                    trial.user_attrs.get("error") or "", repeat_of)


def param_importances(study) -> tuple[dict[str, float], str]:
    """Optuna's fANOVA importances over the completed trials, or why there are none."""
    optuna = import_optuna()
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2:
        return {}, (f"not available: importances need at least 2 completed trials "
                    f"(this study has {len(complete)})")
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        found = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (RuntimeError, ValueError) as err:
        return {}, f"not available: {err}"
    return dict(found), f"fANOVA over the {len(complete)} completed trials"


def grid_epochs(config: TuneConfig, base_epochs: int) -> int | None:
    """Training epochs of the full grid of the space (None if a dimension is continuous)."""
    if config.grid_size is None:
        return None
    swept = [d for d in config.space if d.key == "train.epochs"]
    if not swept:
        return config.grid_size * base_epochs
    values = swept[0].grid_values
    return config.grid_size // len(values) * sum(values)


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _params_text(params: dict[str, Any]) -> str:
    from textclf.reporting.experiments import to_yaml

    return ", ".join(f"{k}={to_yaml(v)}" for k, v in params.items())


def headline(summary: StudySummary) -> list[str]:
    """The report's first lines (also what `textclf tune` prints at the end)."""
    states = ["complete", "pruned", "failed", "interrupted"]
    states += ["waiting"] if summary.count("waiting") else []     # queued: they run next
    counts = ", ".join(f"{summary.count(state)} {state}" for state in states)
    lines = [f"Study {summary.name}: {len(summary.rows)} trials ({counts}); "
             f"{summary.epochs_trained} epochs trained; metric {summary.metric} "
             f"({summary.direction}), the kept epoch's validation score."]
    if summary.grid_epochs:
        share = summary.epochs_trained / summary.grid_epochs
        lines.append(f"A full grid of this space would train {summary.grid_epochs} epochs: "
                     f"this study trained {share:.0%} of that.")
    best = summary.best
    if best:
        lines.append(f"Best: trial {best.number}, {summary.metric} {best.value:.4f} "
                     f"({_params_text(best.params)}).")
    else:
        lines.append("No trial has completed yet.")
    return lines


def apply_command(summary: StudySummary) -> str | None:
    """What puts the best trial's params, model and metrics in the workspace."""
    return f"dvc exp apply {summary.best.experiment}" if summary.best else None


TRIAL_HEADER = ["trial", "experiment", "state", "value", "epochs trained", "pruned at epoch",
                "params"]


def _trial_cells(row: TrialRow) -> list[str]:
    note = row.error or (f"repeat of trial {row.repeat_of}" if row.repeat_of is not None else "")
    return [str(row.number), row.experiment, row.state + (f" ({note})" if note else ""),
            _fmt(row.value), str(row.epochs_trained), str(row.pruned_at_epoch or ""),
            _params_text(row.params)]


def markdown(summary: StudySummary) -> str:
    parts = [f"# Study {md_text(summary.name)}", "", *(md_text(x) for x in headline(summary)), ""]
    if apply_command(summary):      # study names are letters, digits, '.', '-', '_' only
        parts += ["Take it with:", "", "```bash", apply_command(summary), "```", ""]
    parts += [
             "## Best so far against epochs trained", "",
             md_table(["epochs trained so far", f"best {summary.metric}"],
                      [[str(e), _fmt(v)] for e, v in summary.progress]), "",
             "## Param importance", "", md_text(summary.importance_note), ""]
    if summary.importances:
        parts += [md_table(["param", "importance"],
                           [[k, f"{v:.3f}"] for k, v in summary.importances.items()]), ""]
    pruned = [r for r in summary.rows if r.state == "pruned"]
    parts += ["## Pruned trials", "", md_text(f"{len(pruned)} pruned.") if pruned else
              "None.", ""]
    if pruned:
        parts += [md_table(TRIAL_HEADER, [_trial_cells(r) for r in pruned]), ""]
    parts += ["## Trials", "", md_table(TRIAL_HEADER, [_trial_cells(r) for r in summary.rows]),
              ""]
    return "\n".join(parts)


def html(summary: StudySummary) -> str:
    best = summary.best
    body = [heading(1, f"Study {summary.name}"), *(paragraph(x) for x in headline(summary))]
    if apply_command(summary):
        body.append(f"<p>Take it with <code>{escape(apply_command(summary))}</code></p>")
    body += [heading(2, "Best so far against epochs trained"),
            progress_chart(summary.progress, summary.metric) or paragraph("No trial yet."),
            heading(2, "Param importance"), paragraph(summary.importance_note)]
    if summary.importances:
        body.append(html_table(["param", "importance"],
                               [[k, f"{v:.3f}"] for k, v in summary.importances.items()]))
    pruned = [r for r in summary.rows if r.state == "pruned"]
    body += [heading(2, "Pruned trials"),
             html_table(TRIAL_HEADER, [_trial_cells(r) for r in pruned]) if pruned
             else paragraph("None."),
             heading(2, "Trials"),
             html_table(TRIAL_HEADER, [_trial_cells(r) for r in summary.rows],
                        ["best" if best and r.number == best.number else ""
                         for r in summary.rows])]
    return html_page(f"Study {summary.name}", "\n".join(body))


def progress_chart(points: list[tuple[int, float]], metric: str) -> str:
    """Best value so far (a step line) against epochs trained so far, as inline SVG."""
    if not points:
        return ""
    left, top, width, height = 60, 30, 360, 180
    xs, ys = [x for x, _ in points], [y for _, y in points]
    x_max = max(max(xs), 1)
    lo, hi = min(ys), max(ys)
    lo, hi = (lo - 0.01, hi + 0.01) if hi == lo else (lo, hi)

    def at(x: float, y: float) -> str:
        return f"{left + width * x / x_max:.1f},{top + height * (hi - y) / (hi - lo):.1f}"
    steps = [at(xs[0], ys[0])]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        steps += [at(x1, y0), at(x1, y1)]
    labels = [(left - 4, top + height * (hi - v) / (hi - lo) + 4, f"{v:.3g}", "end")
              for v in (lo, hi)]
    labels += [(left + width * x / x_max, top + height + 14, str(x), "middle")
               for x in sorted({0, x_max})]
    labels += [(left + width / 2, top + height + 30, "epochs trained so far", "middle"),
               (left + width / 2, 16, f"best {metric} so far", "middle")]
    text = "".join(f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{a}">{escape(t)}</text>'
                   for x, y, t, a in labels)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 20}" '
            f'height="{top + height + 40}"><title>{escape(f"best {metric} so far")}</title>'
            f'<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="none" '
            f'stroke="#999"/><polyline fill="none" stroke="{PALETTE[0]}" stroke-width="2" '
            f'points="{" ".join(steps)}"/>'
            + "".join(f'<circle cx="{at(x, y).split(",")[0]}" cy="{at(x, y).split(",")[1]}" '
                      f'r="3" fill="{PALETTE[0]}"/>' for x, y in points)
            + text + "</svg>")


def write_study_report(study, config, params: str | Path, html_path: str | Path,
                       markdown_path: str | Path) -> None:
    """Write the study's page and summary; print its headline and how to take the best."""
    summary = summarize(study, config, base_epochs=load_params(params).train.epochs)
    for path, text in ((html_path, html(summary)), (markdown_path, markdown(summary))):
        with atomic_file(path) as scratch:
            scratch.write_text(text, encoding="utf-8")
    for line in headline(summary):
        print(f"tune: {line}")
    if apply_command(summary):
        print(f"tune: take it with `{apply_command(summary)}`")
    print(f"tune: report {html_path}, {markdown_path}")
