"""The README's own-data section as a newcomer runs it: after the main command, in a project
of its own with the tiny model (`readme_own_data`), so that it runs beside the tour on the
other worker. It starts from the published run, which is where the tour leaves a user
(test_readme.py checks that the tour leaves the workspace as it was)."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.slow


def test_every_command_of_the_own_data_section_succeeds(readme_own_data):
    failed = [f"[{step.section}] {step.command}\n{step.stdout}\n{step.stderr}"
              for step in readme_own_data.steps if step.returncode]
    assert not failed
    assert [s.section for s in readme_own_data.steps][0] == "main-command"
    assert {s.section for s in readme_own_data.steps} == {"main-command", "own-data"}
    assert readme_own_data.skipped == []


def test_own_data_leaves_the_workspace_as_it_was(readme_own_data):
    # the sweep section (test_sweep.py) starts from the published run
    assert readme_own_data.after == readme_own_data.before


def test_own_data_runs_from_the_published_run_and_is_not_ranked_with_the_demo_data(
        readme_own_data):
    [own] = [row for row in readme_own_data.exps.values()
             if (row["params"] or {}).get("data", {}).get("path") == "data/my_reviews.csv"]
    assert own["state"] == "success"
    data, train = own["params"]["data"], own["params"]["train"]
    assert data["class_ratio"] is None and data["labels"] is None and train["batch_size"] == 32
    assert 0.0 <= own["metrics"]["metrics/evaluate/metrics.json"]["f1_macro"] <= 1.0
    groups = readme_own_data.report["groups"]
    assert sorted(g["data_path"] for g in groups) == ["data/my_reviews.csv", "data/reviews.csv"]


def test_own_data_commits_the_pointer_not_the_data_or_outputs(readme_own_data):
    committed = readme_own_data.would_add
    tracked = (readme_own_data.project / "data/my_reviews.csv.dvc").is_file()
    assert tracked and "data/my_reviews.csv" not in committed
    for folder in ("dvc_plots/", "reports/", "logs/", "data/prepared/", "models/classifier/"):
        assert not any(path.startswith(folder) for path in committed), folder
    assert not any(re.search(r"/\.[^/]+\.(tmp-|old)", f"/{path}") for path in committed)
