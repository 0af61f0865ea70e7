"""Many experiments through DVC's queue: the sweep section of docs/experiments.md (run by
the `readme_sweep` fixture after the README's main command, the state that test_readme.py
and test_readme_own_data.py check the tour and own-data sections leave), then a failing grid
point, a re-run that must match, promoting a winner, and the report on all of them."""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from harness import experiments, git_show, run, wait_for_queue

pytestmark = pytest.mark.slow

BATCH_SIZES = [16, 32]
RATIOS = [[1, 1, 1, 1, 1], [2, 1, 1, 1, 1]]
METRIC_FILES = ["metrics/evaluate/metrics.json", "metrics/train/metrics.json"]
LOSS_TSV = "metrics/train/plots/metrics/train/loss.tsv"


def test_every_command_of_the_sweep_section_succeeds(readme_sweep):
    for step in readme_sweep.steps:
        # `git add -A && git commit` with nothing new to commit is what a user sees too
        if step.returncode and "nothing to commit" in step.stdout:
            continue
        assert step.returncode == 0, f"[{step.section}] {step.command}\n{step.stdout}\n{step.stderr}"
    assert [s.section for s in readme_sweep.steps][0] == "main-command"
    assert {s.section for s in readme_sweep.steps} == {"main-command", "sweep"}
    assert readme_sweep.skipped == ["dvc queue logs <name>"]     # a placeholder, not a command


def test_the_sweep_commits_the_baseline_not_a_leftover_experiment(readme_sweep):
    params = yaml.safe_load(readme_sweep.sweep_commit_params)
    assert params["data"]["path"] == "data/reviews.csv"
    assert params["data"]["class_ratio"] is None and params["train"]["batch_size"] == 32
    committed = readme_sweep.sweep_commit_files
    for folder in ("dvc_plots/", "reports/", "logs/", "data/prepared/", "models/classifier/"):
        assert not any(path.startswith(folder) for path in committed), folder
    grid = {name: row for name, row in readme_sweep.sweep_exps.items()
            if name in readme_sweep.sweep_status}
    assert len(grid) == 4 and set(readme_sweep.sweep_status.values()) == {"Success"}
    assert {(r["params"]["train"]["batch_size"], str(r["params"]["data"]["class_ratio"]))
            for r in grid.values()} == {(16, "[1, 1, 1, 1, 1]"), (16, "[2, 1, 1, 1, 1]"),
                                        (32, "[1, 1, 1, 1, 1]"), (32, "[2, 1, 1, 1, 1]")}


@dataclass(frozen=True)
class Sweep:
    project: Path
    status: dict[str, str]       # `dvc queue status` once the grid was done: name -> state
    grid: dict[str, dict]        # experiments once the grid was done: name -> row
    rerun: str                   # what the workspace re-run of one grid point printed


def read_json(project: Path, rev: str, path: str) -> dict:
    return json.loads(git_show(project, rev, path))


def grid_point(sweep: Sweep, batch_size: int, ratio: list[int]) -> str:
    """The name DVC gave the grid point with these params."""
    [name] = [name for name, row in sweep.grid.items()
              if row["params"]["train"]["batch_size"] == batch_size
              and row["params"]["data"]["class_ratio"] == ratio]
    return name


@pytest.fixture(scope="module")
def sweep(readme_sweep):
    project = readme_sweep.project
    grid = {name: row for name, row in readme_sweep.sweep_exps.items()
            if name in readme_sweep.sweep_status}
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OMP_NUM_THREADS", "1")
        try:
            # One grid point again, in the workspace; -f so no stage is restored from cache.
            rerun = run(["dvc", "exp", "run", "-f", "-n", "rerun", "-S", "train.batch_size=16",
                         "-S", "data.class_ratio=[2,1,1,1,1]"], project).stdout
            run(["git", "reset", "-q", "--hard"], project)
            run(["dvc", "checkout", "-q"], project)
            yield Sweep(project, readme_sweep.sweep_status, grid, rerun)
        finally:
            run(["dvc", "queue", "stop", "--kill"], project, check=False)


def test_grid_sweep_runs_every_point_once_with_its_own_params(sweep):
    assert len(sweep.status) == 4 and set(sweep.status.values()) == {"Success"}, sweep.status
    assert set(sweep.status) == set(sweep.grid)
    for batch_size, ratio in itertools.product(BATCH_SIZES, RATIOS):
        row = sweep.grid[grid_point(sweep, batch_size, ratio)]
        assert row["state"] == "success"
        # class counts are a plain file, not a DVC metric: read from the run's commit
        counts = read_json(sweep.project, row["rev"], "metrics/class_counts.json")["train_after"]
        first, *rest = counts.values()           # "very negative" first, as in data.labels
        assert all(abs(first - ratio[0] * n) <= ratio[0] for n in rest), counts
        scores = row["metrics"]["metrics/evaluate/metrics.json"]
        assert 0.0 <= scores["f1_macro"] <= 1.0 and 0.0 <= scores["accuracy"] <= 1.0
        assert set(row["metrics"]) == {"metrics/evaluate/metrics.json"}   # headline only
        training = read_json(sweep.project, row["rev"], "metrics/train/metrics.json")
        assert training["step"] == 0                                       # 1 epoch logged
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
    # -1 fails before training and 16 trains (with the default class ratio, a combination
    # no earlier run had, so nothing comes from DVC's run cache): one epoch shows it succeeds
    run(["dvc", "exp", "run", "--queue", "-n", "bad-batch", "-S", "train.batch_size=-1,16",
         "-S", "train.epochs=1"], sweep.project)
    run(["dvc", "queue", "start", "-j", "2"], sweep.project)
    status = wait_for_queue(sweep.project)

    assert status["bad-batch-1"] == "Failed" and status["bad-batch-2"] == "Success", status
    assert all(status[name] == "Success" for name in sweep.grid)
    logs = run(["dvc", "queue", "logs", "bad-batch-1"], sweep.project).stdout
    assert "train.batch_size must be a positive integer, found -1" in logs, logs
    good = experiments(sweep.project)["bad-batch-2"]
    assert good["params"]["train"]["batch_size"] == 16
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
    compared = json.loads(run(["textclf", "report", "--json"], sweep.project).stdout)
    exps = experiments(sweep.project)
    finished = {name for name, row in exps.items() if row["state"] == "success"}

    # One dataset here (runs on other data get their own leaderboard: test_readme.py)
    [demo] = compared["groups"]
    assert demo["data_path"] == "data/reviews.csv"
    ranked = demo["ranked"]
    assert {r["name"] for g in compared["groups"] for r in g["ranked"]} == finished
    assert sum(r["is_baseline"] for r in ranked) == 1
    for group in compared["groups"]:
        scores = [r["metrics"]["f1_macro"] for r in group["ranked"]]
        assert scores == sorted(scores, reverse=True)
    point = next(r for r in ranked if r["name"] == grid_point(sweep, 16, [2, 1, 1, 1, 1]))
    assert point["params"]["data.class_ratio"] == [2, 1, 1, 1, 1]      # typed, not a repr
    for name in set(exps) - finished:             # e.g. bad-batch-1, if it ran before
        assert f"{name} (failed)" in compared["not_ranked"]
    summary = md_path.read_text()
    rows = [line.split(" | ") for line in summary.splitlines() if re.match(r"\| \d+ \|", line)]
    assert [row[1] for row in rows] == [r["name"] + " (baseline)" * r["is_baseline"]
                                        for g in compared["groups"] for r in g["ranked"]]
    assert "different test sets" not in summary    # one dataset: no warning (test_report.py)
    assert "None" not in summary and "[2, 1, 1, 1, 1]" in summary
    page = html_path.read_text()
    assert page.count("<svg") >= 6 and "<script" not in page
    # one point per epoch: 1 epoch per run here, the baseline's as committed
    epochs = {1, len(git_show(sweep.project, "HEAD", LOSS_TSV).decode().splitlines()) - 1}
    for chart in re.findall(r"<svg .*?</svg>", page, re.S):
        if "per epoch" in chart:
            points = re.findall(r'points="([^"]*)"', chart)
            assert points and {len(p.split()) for p in points} <= epochs, points
