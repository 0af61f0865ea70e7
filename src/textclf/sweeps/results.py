"""What one sweep point reports back, and the leaderboard of all of them (pure).

A point's outcome travels between KFP tasks as a JSON string (`PointResult.to_json`), so
a failed point is an ordinary value the leaderboard lists, not a failed task.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from textclf.reporting.experiments import ranked_by

RESULT_VERSION = 1
HEADLINE = ("f1_macro", "accuracy", "best.val_f1_macro")


@dataclass(frozen=True)
class PointResult:
    name: str                                   # the DVC experiment name
    overrides: tuple[str, ...]                  # its `-S` values
    status: str                                 # "success" | "failed"
    error: str = ""                             # failed: the step and what it printed
    rev: str = ""                               # the experiment's commit, once it ran
    stages_run: tuple[str, ...] = ()            # stages `dvc exp run` ran (not restored)
    metrics: dict[str, float] = field(default_factory=dict)   # flattened, e.g. "val.f1_macro"
    labels: tuple[str, ...] = ()                # confusion matrix order
    confusion: tuple[tuple[int, ...], ...] = ()  # rows: actual, columns: predicted

    @property
    def ok(self) -> bool:
        return self.status == "success"

    def to_json(self) -> str:
        return json.dumps({"version": RESULT_VERSION, **asdict(self)})

    @classmethod
    def from_json(cls, text: str) -> PointResult:
        data = json.loads(text)
        if data.pop("version", None) != RESULT_VERSION:
            raise ValueError(f"not a textclf sweep point result (version {RESULT_VERSION}): "
                             f"{text[:80]!r}")
        return cls(name=data["name"], overrides=tuple(data["overrides"]),
                   status=data["status"], error=data["error"], rev=data["rev"],
                   stages_run=tuple(data["stages_run"]),
                   metrics=data["metrics"], labels=tuple(data["labels"]),
                   confusion=tuple(tuple(row) for row in data["confusion"]))


def flatten_numbers(tree: Any, prefix: str = "") -> dict[str, float]:
    """{'val': {'f1_macro': 0.7}, 'step': 5} -> {'val.f1_macro': 0.7, 'step': 5.0}."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items()
                for k, v in flatten_numbers(sub, f"{prefix}{key}.").items()}
    if isinstance(tree, (int, float)) and not isinstance(tree, bool) and math.isfinite(tree):
        return {prefix[:-1]: float(tree)}
    return {}


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return str(int(value)) if float(value).is_integer() else f"{value:.4f}"


def _cell(text: str) -> str:
    """Table-safe: a '|' or a newline would break the Markdown row."""
    return text.replace("|", "\\|").replace("\n", " ").strip()


def _params(result: PointResult) -> str:
    return ", ".join(f"`{o}`" for o in result.overrides) or "(none)"


def rank(results: list[PointResult], sort_by: str,
         ascending: bool = False) -> tuple[list[PointResult], list[PointResult]]:
    """(finished points best first, failed points); a finished one without `sort_by` last."""
    return (ranked_by([r for r in results if r.ok], sort_by, ascending),
            [r for r in results if not r.ok])


def leaderboard_markdown(results: list[PointResult], sort_by: str = "f1_macro",
                         ascending: bool = False) -> str:
    """The sweep as a Markdown page: ranked table, then every failed point with its error."""
    ranked, failed = rank(results, sort_by, ascending)
    columns = [sort_by, *(m for m in HEADLINE if m != sort_by)]
    order = "lowest" if ascending else "highest"
    lines = [f"# Sweep leaderboard: {len(ranked)} finished, {len(failed)} failed",
             "", f"Sorted by `{sort_by}`, {order} first.", ""]
    if ranked:
        lines += ["| rank | experiment | params | " + " | ".join(columns) + " | commit |",
                  "|" + " --- |" * (len(columns) + 4)]
        for i, r in enumerate(ranked, 1):
            scores = " | ".join(_fmt(r.metrics.get(m)) for m in columns)
            lines.append(f"| {i} | {r.name} | {_params(r)} | {scores} | {r.rev[:7]} |")
    if failed:
        lines += ["", "## Failed", "", "| experiment | params | error |", "| --- | --- | --- |"]
        lines += [f"| {r.name} | {_params(r)} | {_cell(r.error)} |" for r in failed]
    return "\n".join(lines) + "\n"
