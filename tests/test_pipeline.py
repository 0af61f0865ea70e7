"""The whole pipeline through DVC itself: what `dvc repro` and `dvc exp run` re-run, and what
the report makes of a commit whose metrics are not its params' (in a clone of the project the
`readme_tour` fixture trained, so nothing is trained twice)."""

from __future__ import annotations

import json

import pytest

from harness import clone, git_show, run, set_params

pytestmark = pytest.mark.slow


def test_repro_trains_and_an_experiment_re_runs_only_what_changed(readme_tour):
    published = readme_tour.project
    scores = json.loads(git_show(published, "HEAD", "metrics/evaluate/metrics.json"))
    assert 0.0 <= scores["accuracy"] <= 1.0 and 0.0 <= scores["f1_macro"] <= 1.0
    # the main command on the committed run: nothing to re-run, the scores on screen
    assert "Running stage" not in readme_tour.step("main-command", "dvc repro").stdout

    batch = readme_tour.step("tour", "dvc exp run --temp -S train.batch_size").stdout
    assert "Running stage 'train'" in batch and "Running stage 'evaluate'" in batch
    assert "Running stage 'prepare'" not in batch and "Running stage 'resample'" not in batch
    ratio = readme_tour.step("tour", "dvc exp run --temp -S 'data.class_ratio").stdout
    assert "Running stage 'resample'" in ratio and "Running stage 'prepare'" not in ratio


def test_a_commit_whose_params_are_not_its_runs_is_listed_not_ranked(readme_tour, tmp_path):
    # The report reads git only (params.yaml, dvc.lock, metrics at each commit): a plain
    # clone without the DVC cache is enough.
    project = clone(readme_tour.project, tmp_path / "clone")
    set_params(project, train={"lr": 0.001})
    run(["git", "commit", "-qam", "lr 0.001, committed without dvc repro"], project)

    compared = json.loads(run(["textclf", "report", "-A", "--json"], project).stdout)
    ranked = [r["params"]["train.lr"] for g in compared["groups"] for r in g["ranked"]]
    assert ranked and 0.001 not in ranked, compared
    assert any("params and metrics from different runs: train.lr: params.yaml 0.001, "
               "dvc.lock 0.0001" in line for line in compared["not_ranked"]), compared
    only_head = run(["textclf", "report", "--json"], project, check=False)
    assert only_head.returncode == 2 and "no experiment's params match" in only_head.stderr
    pages = run(["textclf", "report", "-A", "--html", tmp_path / "r.html", "--markdown",
                 tmp_path / "r.md"], project).stdout
    # the terminal and the pages count alike: ranked, and not ranked beside them
    counted = f"{len(ranked)} experiment{'s' * (len(ranked) != 1)}"
    assert pages.startswith(f"report: {counted} ranked, "
                            f"{len(compared['not_ranked'])} not ranked"), pages
    assert f"# Experiments: {counted}, sorted" in (tmp_path / "r.md").read_text()
    for flag in ("--evaluate-dir", "--train-dir"):
        wrong = run(["textclf", "report", "-A", "--json", flag, "nowhere"], project, check=False)
        assert wrong.returncode == 2 and wrong.stderr.startswith(
            f"error: {flag} nowhere: no run has nowhere/"), wrong.stderr
