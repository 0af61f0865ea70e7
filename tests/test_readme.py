"""The README as a newcomer runs it: its shell blocks, in order, in a project with the tiny
model (only the model name and the epoch count differ), and each step's claim checked.
The main command and the tour run here (`readme_tour`); the own-data section runs in
test_readme_own_data.py and the sweep of docs/experiments.md in test_sweep.py, each in a
project of its own, from the state this file checks the tour leaves."""

from __future__ import annotations

import re

import pytest

from harness import BLOCK_PAGES, REPO, readme_blocks

SECTIONS = ("main-command", "test-command", "tour", "own-data", "sweep", "loop-watch",
            "loop-labels", "loop-retrain", "loop-live")
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# A user with nothing new to commit sees this from the sweep's `git add -A && git commit`.
NOTHING_TO_COMMIT = "nothing to commit"


def test_the_readme_marks_the_blocks_that_are_run():
    assert set(BLOCK_PAGES) == set(SECTIONS)
    for marker in SECTIONS:
        assert readme_blocks(marker), marker
        # on one page only, the one the walks read
        marked = [page.relative_to(REPO).as_posix() for page in PAGES
                  if f"<!-- {marker} -->" in page.read_text(encoding="utf-8")]
        assert marked == [BLOCK_PAGES[marker]], (marker, marked)
    # Exactly two set-up commands, one line each (.ci/run runs the second verbatim).
    text = (REPO / "README.md").read_text()
    assert text.count("<!-- main-command -->") == text.count("<!-- test-command -->") == 1
    # the main command first; the test command under its Development heading
    assert text.index("<!-- main-command -->") < text.index("<!-- test-command -->")
    assert text.rindex("\n## ", 0, text.index("<!-- test-command -->")) == \
        text.index("\n## Development\n")
    [main] = readme_blocks("main-command")
    [tests] = readme_blocks("test-command")
    assert main.endswith("&& dvc repro && dvc metrics show"), main
    assert tests.endswith("python -m pytest"), tests


slow = pytest.mark.slow


def failures(walk) -> list[str]:
    """The steps that failed, with what they printed ("nothing to commit" is not a failure:
    a user with nothing new to commit sees it from the sweep's `git add -A && git commit`)."""
    return [f"[{step.section}] {step.command}\n{step.stdout}\n{step.stderr}"
            for step in walk.steps if step.returncode and NOTHING_TO_COMMIT not in step.stdout]


@slow
def test_every_command_of_the_tour_succeeds(readme_tour):
    assert not failures(readme_tour)
    assert [s.section for s in readme_tour.steps][0] == "main-command"
    assert {s.section for s in readme_tour.steps} == {"main-command", "tour"}
    assert readme_tour.skipped == []


@slow
def test_the_main_command_ends_with_the_headline_metrics(readme_tour):
    shown = readme_tour.step("main-command", "dvc repro").stdout
    last = shown.rsplit("didn't change", 1)[-1]
    assert re.search(r"accuracy\s+f1_macro\s+f1_weighted", last), shown
    assert re.search(r"metrics\.json\s+[0-9.]+\s+[0-9.]+\s+[0-9.]+", last), shown


@slow
def test_the_tour_leaves_the_workspace_as_it_was(readme_tour):
    # so the own-data section (test_readme_own_data.py) and the sweep (test_sweep.py) start
    # from the published run, each in a project of its own
    assert readme_tour.after_tour == readme_tour.before_tour
    assert "Data and pipelines are up to date" in readme_tour.step("tour", "dvc status").stdout
    assert (readme_tour.project / "dvc_plots/index.html").is_file()
    assert (readme_tour.project / "reports/experiments.html").is_file()
    predicted = readme_tour.step("tour", "textclf predict").stdout
    assert predicted.count("\n") >= 2, predicted


@slow
def test_each_tour_variant_changes_only_its_own_param(readme_tour):
    runs = [row for row in readme_tour.after_tour_exps.values() if row["rev"] != row["baseline"]]
    params = {(row["params"]["train"]["batch_size"], str(row["params"]["data"]["class_ratio"]))
              for row in runs}
    # the class-ratio run keeps the default batch size; the batch-size run the default ratio
    assert params == {(16, "None"), (32, "[2, 1, 1, 1, 1]")}, params
    assert all(row["state"] == "success" for row in runs)


@slow
def test_exp_show_fits_120_columns_with_scores_and_changed_params(readme_tour):
    table = readme_tour.narrow_exp_show
    lines = table.splitlines()
    assert max(map(len, lines)) <= 120, table
    header = next(line for line in lines if "Experiment" in line)
    for column in ("accuracy", "f1_macro", "train.batch_size", "data.class_ratio"):
        assert column in header, table
    assert "[2, 1, 1, 1, 1]" in table and re.search(r"\b16\b", table), table
    assert "per_class" not in table and "train_after" not in table


@slow
def test_generated_folders_are_never_committed(readme_tour):
    # after the tour wrote plots, a report, a model and splits: what `git add -A` would add
    committed = readme_tour.would_add
    assert (readme_tour.project / "dvc_plots").is_dir() and (readme_tour.project / "reports").is_dir()
    for folder in ("dvc_plots/", "reports/", "logs/", "data/prepared/", "models/classifier/"):
        assert not any(path.startswith(folder) for path in committed), folder
    assert not any(re.search(r"/\.[^/]+\.(tmp-|old)", f"/{path}") for path in committed)
