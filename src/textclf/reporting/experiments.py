"""Reading DVC experiments for the report, through DVC's public API only.

`dvc.api.exp_show` lists the runs (baselines, experiments, their state and the hashes of
their dependencies); `dvc.api.DVCFileSystem` reads each run's own files at its git revision:
params.yaml and dvc.lock (typed, exactly as they were committed), and the small metrics and
plot files, which are git-tracked (`cache: false`).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from textclf.errors import UserError
from textclf.params import parse_yaml

CURVES = {"loss": "training loss", "val_accuracy": "validation accuracy",
          "val_f1_macro": "validation macro-F1"}
# What the scores were measured on: evaluate's test split and the label order. Two runs
# whose test sets differ have scores that cannot be ranked against each other.
DATA_DEPS = ("data/prepared/test.parquet", "data/prepared/labels.json")


@dataclass(frozen=True)
class Experiment:
    """One finished run (a baseline commit or a DVC experiment), with what the report draws."""
    rev: str                       # as `dvc exp show` names it: a short SHA or a branch
    name: str                      # `-n` name, DVC's made-up name, or the baseline's branch
    baseline: str                  # rev of the commit it started from (its own for a baseline)
    params: dict[str, Any]         # "train.batch_size" -> 16, typed as in params.yaml
    metrics: dict[str, float]      # "f1_macro" (test), "best.val_f1_macro" (training)
    data: str = ""                 # fingerprint of the test data its scores come from
    stale: str = ""                # why its params and metrics may come from different runs
    per_class_f1: dict[str, float] = field(default_factory=dict)
    curves: dict[str, list[float]] = field(default_factory=dict)   # CURVES key -> per epoch
    confusion: list[tuple[str, str]] = field(default_factory=list)  # (actual, predicted)
    found: frozenset[str] = frozenset()   # which of RunFiles.metrics the run has

    @property
    def is_baseline(self) -> bool:
        return self.rev == self.baseline


@dataclass(frozen=True)
class Listed:
    """A row of `dvc exp show`: which run, which baseline, whether it finished."""
    rev: str
    name: str
    baseline: str
    state: str                     # success | queued | running | failed
    data: str                      # DATA_DEPS hashes, joined


@dataclass(frozen=True)
class RunFiles:
    """Where the stages write what the report reads (dvc.yaml's paths)."""
    train_dir: str = "metrics/train"
    evaluate_dir: str = "metrics/evaluate"

    @property
    def metrics(self) -> list[str]:
        # Not only dvc.yaml's `metrics:`: the report also ranks by training scores and time.
        return [f"{self.evaluate_dir}/metrics.json", f"{self.train_dir}/metrics.json",
                f"{self.train_dir}/time.json"]

    @property
    def curves(self) -> dict[str, str]:
        plots = f"{self.train_dir}/plots/metrics"
        return {"loss": f"{plots}/train/loss.tsv", "val_accuracy": f"{plots}/val/accuracy.tsv",
                "val_f1_macro": f"{plots}/val/f1_macro.tsv"}


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree}
    return {k: v for key, sub in tree.items() for k, v in flatten(sub, f"{prefix}{key}.").items()}


def list_runs(table: Iterable[dict]) -> list[Listed]:
    """The rows of `dvc.api.exp_show` (baseline rows, each followed by its experiments)."""
    listed, baseline = {}, ""
    for row in table:
        if row["rev"] == "workspace":    # uncommitted: `dvc exp save` makes it a row
            continue
        if row.get("typ") == "baseline":
            baseline = row["rev"]
        state = (row.get("State") or "success").lower()   # a workspace `exp run`: no state
        data = "+".join(str(row.get(dep) or "-") for dep in DATA_DEPS)
        # One commit can show twice, e.g. under two branches: the first row wins.
        listed.setdefault(row["rev"], Listed(row["rev"], row.get("Experiment") or row["rev"],
                                             baseline, state, data))
    return list(listed.values())


def ranked_by(items: list, sort_by: str, ascending: bool = False) -> list:
    """`items` (each with a `metrics` dict) best first by `sort_by`; those without it last,
    in their order: the leaderboard's order, for the report and the KFP sweep alike."""
    scored = sorted((item for item in items if sort_by in item.metrics),
                    key=lambda item: item.metrics[sort_by], reverse=not ascending)
    return scored + [item for item in items if sort_by not in item.metrics]


def stale_params(params: dict[str, Any], lock: dict) -> str:
    """What differs between params.yaml and the params dvc.lock says the outputs were made with.

    A commit with a changed params.yaml but the old dvc.lock (no `dvc repro` before the commit)
    has metrics from a run with other params; DVC's own `dvc status` reports it the same way.
    """
    diffs = []
    for stage in (lock.get("stages") or {}).values():
        for key, value in ((stage.get("params") or {}).get("params.yaml") or {}).items():
            for flat, used in flatten(value, f"{key}.").items():
                if flat in params and params[flat] != used:
                    diffs.append(f"{flat}: params.yaml {to_yaml(params[flat])}, "
                                 f"dvc.lock {to_yaml(used)}")
    return "; ".join(dict.fromkeys(diffs))


def stale_deps(fs, lock: dict) -> str:
    """Data a stage used (dvc.lock) that is not the data committed beside it.

    When `prepare` was re-run and committed but `train`/`evaluate` were not, the metrics
    are from the old data while the data fingerprint is the new one. Only dependencies that
    are outputs of another stage are checked: those are what `dvc repro` would re-run for.
    """
    from dvc_data.index import DataIndexError   # DVC's own data library

    diffs = []
    for name, stage in (lock.get("stages") or {}).items():
        for dep in stage.get("deps") or []:
            used = dep.get("md5")
            try:
                info = fs.info(dep["path"]) if used and fs.isdvc(dep["path"]) else {}
            except (OSError, DataIndexError):
                # Not checkable here: e.g. a folder's listing is only in a cache this
                # clone has not pulled. Unknown is not stale.
                continue
            if info.get("md5") and info["md5"] != used:
                diffs.append(f"{name} used {dep['path']} {used[:8]}, the committed one is "
                             f"{info['md5'][:8]}")
    return "; ".join(diffs)


def load_yaml(text: str | None) -> dict:
    """A params.yaml or dvc.lock as DVC reads it (textclf.params.parse_yaml); {} if absent."""
    return (parse_yaml(text) if text else None) or {}


def to_yaml(value: Any) -> str:
    """A value the way params.yaml and `-S key=value` write it: null, [2, 1, 1], 0.0001."""
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix(
        "\n...").removesuffix("...").strip()


def read_run(fs, listed: Listed, files: RunFiles) -> Experiment:
    """One run's params, metrics, curves and confusion pairs, read at its revision."""
    def text(path: str) -> str | None:
        return fs.read_text(path, encoding="utf-8") if fs.isfile(path) else None

    params = flatten(load_yaml(text("params.yaml")))
    lock = load_yaml(text("dvc.lock"))
    metrics: dict[str, float] = {}
    found = frozenset(path for path in files.metrics if fs.isfile(path))
    for path in files.metrics:
        metrics.update({k: v for k, v in flatten(json.loads(text(path) or "{}")).items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)})
    per_class = json.loads(text(f"{files.evaluate_dir}/per_class.json") or "{}")
    per_class_f1 = {c: v["f1"] for c, v in per_class.items() if isinstance(v, dict)}
    if not per_class_f1:     # older runs: per-class scores inside metrics.json
        per_class_f1 = {k.split(".")[1]: v for k, v in metrics.items()
                        if k.startswith("per_class.") and k.endswith(".f1")}
    metrics = {k: v for k, v in metrics.items() if not k.startswith("per_class.")}
    confusion = json.loads(text(f"{files.evaluate_dir}/plots/sklearn/confusion_matrix.json")
                           or "[]")
    return Experiment(
        rev=listed.rev, name=listed.name, baseline=listed.baseline, params=params,
        metrics=metrics, data=listed.data,
        stale="; ".join(filter(None, (stale_params(params, lock), stale_deps(fs, lock)))),
        per_class_f1=per_class_f1,
        curves={key: [float(line.split("\t")[-1]) for line in (text(path) or "").splitlines()[1:]
                      if line.strip()] for key, path in files.curves.items()},
        confusion=[(r["actual"], r["predicted"]) for r in confusion], found=found)


def check_project(repo: str) -> None:
    """A DVC project in a git repository with a commit, or UserError saying which is
    missing (DVC's own words are "SCM error" and "unknown Git revision")."""
    here = Path(repo).resolve()
    if not any((folder / ".dvc").is_dir() for folder in (here, *here.parents)):
        raise UserError(f"{repo}: not a DVC project (no .dvc folder here or above); expected "
                        f"the project's folder, where `dvc exp show` lists its runs")
    head = subprocess.run(["git", "-C", str(here), "rev-parse", "--verify", "-q", "HEAD"],
                          capture_output=True)
    if head.returncode != 0:
        raise UserError(f"{repo}: no git commit to read experiments from; DVC keeps them "
                        f"beside git commits (git add -A && git commit first)")


def read_experiments(repo: str, files: RunFiles,
                     all_commits: bool = False) -> tuple[list[Experiment], list[Listed]]:
    """Finished runs of HEAD (or of every branch's history), and the runs not finished."""
    import dvc.api
    from dvc.exceptions import DvcException

    check_project(repo)

    try:
        # Every branch's first-parent history; HEAD's alone when it is detached.
        revs = (dvc.api.all_branches(repo) or None) if all_commits else None
        table = dvc.api.exp_show(repo=repo, revs=revs, num=-1 if all_commits else 1)
        listed = list_runs(table)
        finished = [run for run in listed if run.state == "success"]
        exps = [read_run(dvc.api.DVCFileSystem(repo, rev=run.rev), run, files)
                for run in finished]
    except DvcException as err:
        raise UserError(f"reading DVC experiments in {repo}: {err}") from None
    return exps, [run for run in listed if run.state != "success"]

