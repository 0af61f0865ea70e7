"""Many experiments through DVC's queue, in a fresh clone: a grid sweep, a failing grid
point, a re-run that must match, promoting a winner, and the report on all of them."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import REPO, run

pytestmark = pytest.mark.slow

BATCH_SIZES = [16, 32]
RATIOS = [[1, 1, 1, 1, 1], [2, 1, 1, 1, 1]]
GRID = ["-S", "train.batch_size=16,32", "-S", "data.class_ratio=[1,1,1,1,1],[2,1,1,1,1]"]
QUEUE_TIMEOUT_S = 600
METRIC_FILES = ["metrics/evaluate/metrics.json", "metrics/train/metrics.json"]
LOSS_TSV = "metrics/train/plots/metrics/train/loss.tsv"


@dataclass(frozen=True)
class Sweep:
    project: Path
    queued: str                  # what `dvc exp run --queue` printed
    status: dict[str, str]       # `dvc queue status` once the grid was done: name -> state
    grid: dict[str, dict]        # experiments once the grid was done: name -> row
    rerun: str                   # what the workspace re-run of one grid point printed


def fresh_clone(tmp: Path, model_dir: Path) -> Path:
    """The repository as someone clones it: committed files only, no DVC cache, no outputs."""
    origin = tmp / "origin"
    shutil.copytree(REPO, origin, ignore=shutil.ignore_patterns(
        ".venv", ".git", "__pycache__", "*.egg-info", ".pytest_cache", "cache", "tmp",
        "prepared", "resampled", "classifier"))
    params = yaml.safe_load((origin / "params.yaml").read_text())
    params["model"]["name"] = str(model_dir)      # absolute, outside the repository
    params["train"]["epochs"] = 2
    (origin / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], origin)
    run(["git", "add", "-A"], origin)
    run(["git", "commit", "-qm", "tiny model"], origin)
    run(["git", "clone", "-q", str(origin), str(tmp / "clone")], tmp)
    return tmp / "clone"


def queue_status(project: Path) -> dict[str, str]:
    """`dvc queue status` as {experiment name: Queued | Running | Success | Failed}."""
    out = run(["dvc", "queue", "status"], project).stdout
    return {m[1]: m[2] for m in re.finditer(r"^[0-9a-f]{7}\s+(\S+)\s+.*?(\w+)\s*$", out, re.M)}


def wait_for_queue(project: Path) -> dict[str, str]:
    deadline = time.monotonic() + QUEUE_TIMEOUT_S
    while True:
        status = queue_status(project)
        if not {"Queued", "Running"} & set(status.values()):
            return status
        if time.monotonic() > deadline:
            run(["dvc", "queue", "kill", *status], project, check=False)
            raise AssertionError(f"queue not done after {QUEUE_TIMEOUT_S}s: {status}")
        time.sleep(2)


def experiments(project: Path) -> dict[str, dict]:
    """`dvc exp show --json` as {name: rev, state, params.yaml, metrics by file, outs}."""
    rows = {}
    for baseline in json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)[1:]:
        for group in baseline.get("experiments") or []:
            state = (group.get("executor") or {}).get("state", "success")
            for exp in group["revs"]:
                data = exp.get("data") or {}
                rows[exp["name"]] = {
                    "rev": exp["rev"], "state": "failed" if exp.get("error") else state,
                    "params": (data.get("params") or {}).get("params.yaml", {}).get("data"),
                    "metrics": {p: m.get("data") for p, m in (data.get("metrics") or {}).items()},
                    "outs": {p: o.get("hash") for p, o in (data.get("outs") or {}).items()}}
    return rows


def git_show(project: Path, rev: str, path: str) -> bytes:
    return subprocess.run(["git", "show", f"{rev}:{path}"], cwd=project, check=True,
                          capture_output=True).stdout


def grid_point(sweep: Sweep, batch_size: int, ratio: list[int]) -> str:
    """The name DVC gave the grid point with these params."""
    [name] = [name for name, row in sweep.grid.items()
              if row["params"]["train"]["batch_size"] == batch_size
              and row["params"]["data"]["class_ratio"] == ratio]
    return name


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, tiny_model_dir):
    with pytest.MonkeyPatch.context() as env:
        # One thread per run: two single-threaded runs on 2 cores finish the grid about
        # 2.5x sooner than one 2-thread run at a time, and two 2-thread runs are slower still.
        env.setenv("OMP_NUM_THREADS", "1")
        project = fresh_clone(tmp_path_factory.mktemp("sweep"), tiny_model_dir)
        try:
            queued = run(["dvc", "exp", "run", "--queue", *GRID], project).stdout
            run(["dvc", "queue", "start", "-j", "2"], project)
            status = wait_for_queue(project)
            grid = experiments(project)
            # One grid point again, in the workspace; -f so no stage is restored from cache.
            rerun = run(["dvc", "exp", "run", "-f", "-n", "rerun", "-S", "train.batch_size=16",
                         "-S", "data.class_ratio=[2,1,1,1,1]"], project).stdout
            run(["git", "reset", "-q", "--hard"], project)
            yield Sweep(project, queued, status, grid, rerun)
        finally:
            run(["dvc", "queue", "stop", "--kill"], project, check=False)


def test_grid_sweep_runs_every_point_once_with_its_own_params(sweep):
    assert sweep.queued.count("Queued experiment") == 4, sweep.queued
    assert len(sweep.status) == 4 and set(sweep.status.values()) == {"Success"}, sweep.status
    assert set(sweep.status) == set(sweep.grid)
    for batch_size, ratio in itertools.product(BATCH_SIZES, RATIOS):
        row = sweep.grid[grid_point(sweep, batch_size, ratio)]
        assert row["state"] == "success"
        counts = row["metrics"]["metrics/class_counts.json"]["train_after"]
        first, *rest = counts.values()           # "very negative" first, as in data.labels
        assert all(abs(first - ratio[0] * n) <= ratio[0] for n in rest), counts
        scores = row["metrics"]["metrics/evaluate/metrics.json"]
        assert 0.0 <= scores["f1_macro"] <= 1.0 and 0.0 <= scores["accuracy"] <= 1.0
        assert row["metrics"]["metrics/train/metrics.json"]["step"] == 1   # 2 epochs logged
    models = {row["outs"]["models/classifier"] for row in sweep.grid.values()}
    assert len(models) == 4                       # four different trainings, not one copied


def test_same_params_data_and_seed_give_identical_metrics(sweep):
    assert "Running stage 'train'" in sweep.rerun and "Running stage 'evaluate'" in sweep.rerun
    point = sweep.grid[grid_point(sweep, 16, [2, 1, 1, 1, 1])]
    rerun = experiments(sweep.project)["rerun"]
    assert rerun["params"] == point["params"] and rerun["rev"] != point["rev"]
    for path in METRIC_FILES:
        assert git_show(sweep.project, rerun["rev"], path) == \
            git_show(sweep.project, point["rev"], path), path
    assert rerun["outs"]["models/classifier"] == point["outs"]["models/classifier"]


def test_a_failing_grid_point_fails_alone_with_its_error_in_the_logs(sweep):
    run(["dvc", "exp", "run", "--queue", "-n", "bad-batch", "-S", "train.batch_size=-1,8"],
        sweep.project)
    run(["dvc", "queue", "start", "-j", "2"], sweep.project)
    status = wait_for_queue(sweep.project)

    assert status["bad-batch-1"] == "Failed" and status["bad-batch-2"] == "Success", status
    assert all(status[name] == "Success" for name in sweep.grid)
    logs = run(["dvc", "queue", "logs", "bad-batch-1"], sweep.project).stdout
    assert "train.batch_size must be a positive integer, found -1" in logs, logs
    good = experiments(sweep.project)["bad-batch-2"]
    assert good["params"]["train"]["batch_size"] == 8
    assert 0.0 <= good["metrics"]["metrics/evaluate/metrics.json"]["f1_macro"] <= 1.0


def test_apply_puts_the_experiment_in_the_workspace(sweep):
    project = sweep.project
    winner = max(sweep.grid.items(),
                 key=lambda item: item[1]["metrics"]["metrics/evaluate/metrics.json"]["f1_macro"])
    try:
        run(["dvc", "exp", "apply", winner[0]], project)
        for path in [*METRIC_FILES, "params.yaml", "dvc.lock"]:
            assert (project / path).read_bytes() == git_show(project, winner[1]["rev"], path), path
        # the model and data splits came back from the cache too, matching dvc.lock
        assert "Data and pipelines are up to date" in run(["dvc", "status"], project).stdout
    finally:
        run(["git", "reset", "-q", "--hard"], project)


def test_report_ranks_every_finished_experiment_under_its_name(sweep, tmp_path):
    html_path, md_path = tmp_path / "report.html", tmp_path / "report.md"
    run(["textclf", "report", "--html", str(html_path), "--markdown", str(md_path)],
        sweep.project)
    summary = md_path.read_text()
    rows = [line.split(" | ") for line in summary.splitlines() if re.match(r"\| \d+ \|", line)]
    exps = experiments(sweep.project)
    finished = {name for name, row in exps.items() if row["state"] == "success"}

    ranked = [row[2] for row in rows]            # "DVC name" column: name and short rev
    assert sorted(ranked[i].split()[0] for i in range(len(rows)) if "(baseline)" not in
                  rows[i][1]) == sorted(finished)
    assert sum("(baseline)" in row[1] for row in rows) == 1
    scores = [float(row[3]) for row in rows]
    assert scores == sorted(scores, reverse=True)
    label = {row[2].split()[0]: row[1] for row in rows}
    assert label["rerun"] == "rerun"              # named with -n
    # unnamed: described by what differs from the baseline (batch_size 32, class_ratio null)
    assert label[grid_point(sweep, 16, [2, 1, 1, 1, 1])] == "class_ratio=2:1:1:1:1, batch_size=16"
    assert label[grid_point(sweep, 32, [1, 1, 1, 1, 1])] == "class_ratio=1:1:1:1:1"
    for name in set(exps) - finished:             # e.g. bad-batch-1, if it ran before
        assert f"{name} (failed)" in summary and name not in label
    page = html_path.read_text()
    assert page.count("<svg") >= 6 and "<script" not in page
    # 2 epochs per run here; the baseline is the committed default run
    epochs = {2, len(git_show(sweep.project, "HEAD", LOSS_TSV).decode().splitlines()) - 1}
    for chart in re.findall(r"<svg .*?</svg>", page, re.S):
        if "per epoch" in chart:
            points = re.findall(r'points="([^"]*)"', chart)
            assert points and {len(p.split()) for p in points} == epochs, points
