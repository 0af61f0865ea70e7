"""docs/loop.md as a user runs it, after the README's main command, in a project of its own
with the tiny model (`readme_loop`): serve, send a week's texts, a label through POST
/feedback, the drift report, `select`, a person's labels imported, the live-accuracy
report, a new data version with a new class, a warm-started candidate, the comparison,
promotion (tags), the new version loaded into the running server, and its live accuracy.
Every claim the page makes is checked here."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from harness import NEW_CLASS, experiments, git_show
from textclf.monitoring.live import MIN_LABELS, TOO_FEW

pytestmark = pytest.mark.slow
SECTIONS = {"loop-watch": 7, "loop-labels": 2, "loop-retrain": 11, "loop-live": 3}


def test_every_command_of_the_loop_succeeds(readme_loop):
    failed = [f"[{step.section}] {step.command}\n{step.stdout}\n{step.stderr}"
              for step in readme_loop.steps if step.returncode]
    assert not failed
    assert [s.section for s in readme_loop.steps] == ["main-command"] + [
        section for section, count in SECTIONS.items() for _ in range(count)]
    assert readme_loop.skipped == []


def answers(walk, week: int) -> dict:
    return json.loads((walk.project / "logs" / f"week-{week}-answers.json").read_text())


def logged(walk) -> list[dict]:
    return [json.loads(line) for path in sorted((walk.project / "logs/predictions").glob(
        "predictions-*.jsonl")) for line in path.read_text().splitlines()]


def test_the_weeks_are_answered_and_logged_under_their_ids(readme_loop):
    for week in (49, 50):
        answered = answers(readme_loop, week)
        sent = readme_loop.weeks[f"week-{week}"]["texts"]
        assert answered["id"] == f"week-{week}" and len(answered["predictions"]) == len(sent)
    lines = logged(readme_loop)
    assert [r["text"] for r in lines] == (readme_loop.weeks["week-49"]["texts"]
                                          + readme_loop.weeks["week-50"]["texts"])
    assert [r["label"] for r in lines] == [p["label"] for week in (49, 50)
                                           for p in answers(readme_loop, week)["predictions"]]


def test_a_label_sent_to_the_server_is_accepted(readme_loop):
    feedback = readme_loop.step("loop-watch", "curl -s localhost:8080/feedback")
    assert json.loads(feedback.stdout) == {"accepted": 1}


def test_drift_estimates_accuracy_without_labels_and_says_when_not_to_trust_it(readme_loop):
    project = readme_loop.project
    metrics = json.loads((project / "metrics/drift.json").read_text())
    performance = metrics["performance"]
    assert 0 <= performance["estimated_accuracy_low"] <= performance["estimated_accuracy"] <= \
        performance["estimated_accuracy_high"] <= 1
    assert metrics["rows"]["current"] == 30 and metrics["damaged_log_lines"] == 0
    page = (project / "reports/drift.md").read_text()
    assert "Estimated accuracy without labels" in page
    assert (project / "reports/drift.html").is_file()
    # The week's wording is new to the model: the domain classifier separates it, and the
    # page says the estimate cannot be trusted instead of printing it as if it could.
    assert metrics["text_drift"]["detected"] == 1 and performance["estimate_reliable"] == 0
    assert "unreliable here" in page


def test_select_chooses_unlabelled_logged_texts_with_the_models_answers(readme_loop):
    chosen = readme_loop.chosen
    week = readme_loop.weeks["week-49"]["texts"]
    predictions = answers(readme_loop, 49)["predictions"]
    assert len(chosen) == 20 and len({row["text"] for row in chosen}) == 20
    assert "0" not in {row["index"] for row in chosen}          # labelled through the API
    for row in chosen:
        i = int(row["index"])
        assert row["request_id"] == "week-49" and week[i] == row["text"]
        assert row["predicted_label"] == predictions[i]["label"]
    tasks = json.loads((readme_loop.project / "reports/to-label.json").read_text())
    assert [t["data"]["text"] for t in tasks] == [row["text"] for row in chosen]
    assert all(t["predictions"][0]["result"][0]["value"]["choices"] for t in tasks)


def version_metrics(walk) -> dict:
    return json.loads((walk.project / "metrics/live.json").read_text())


def right_share(walk, week: int, labels: dict[int, str]) -> float:
    predicted = [p["label"] for p in answers(walk, week)["predictions"]]
    return round(sum(predicted[i] == label for i, label in labels.items()) / len(labels), 4)


def test_the_live_accuracy_of_each_version_is_the_share_of_labelled_answers_that_were_right(
        readme_loop):
    """By hand: week 49's labels (the API's for text 0, the person's for the chosen ones)
    score v1.0.0; week 50's score v1.1.0, the version the verdict is about."""
    week_49 = {0: "very negative"} | {int(r["index"]): readme_loop.truth[r["text"]]
                                      for r in readme_loop.chosen}
    week_50 = {r["index"]: r["label"] for r in readme_loop.week_50_labels}
    live = version_metrics(readme_loop)
    old, new = (answers(readme_loop, week)["model_version"] for week in (49, 50))
    assert old != new
    assert live["current"]["labelled"] == len(week_50) == 24
    assert live["current"]["accuracy"] == right_share(readme_loop, 50, week_50)
    assert live["damaged_log_lines"] == 0
    report = (readme_loop.project / "reports/live.md").read_text()
    assert old[:19] in report and new[:19] in report
    imported = readme_loop.step("loop-labels", "textclf feedback import")
    assert "20 labels" in imported.stdout + imported.stderr
    first_report = readme_loop.step("loop-labels", "textclf feedback report")
    # 21 labels: below MIN_LABELS, the report says so rather than call a drop either way.
    assert len(week_49) == 21 < MIN_LABELS
    assert f"feedback report: {TOO_FEW}" in first_report.stdout + first_report.stderr


def test_the_data_is_a_new_version_with_the_labelled_rows_and_the_new_class(readme_loop):
    project = readme_loop.project
    before = git_show(project, "text-classifier@v1.0.0", "data/reviews.csv").decode()
    after = git_show(project, "text-classifier@v1.1.0", "data/reviews.csv").decode()
    added = after.splitlines()[len(before.splitlines()):]
    assert len(added) == len(readme_loop.chosen) + len(readme_loop.new_class)
    assert sum(line.endswith(f",{NEW_CLASS}") for line in added) == len(readme_loop.new_class)
    lock = git_show(project, "text-classifier@v1.1.0", "dvc.lock").decode()
    assert "init_from: models/v1" in lock and NEW_CLASS in lock


def test_the_candidate_started_from_the_served_model_and_knows_the_new_class(readme_loop):
    project = readme_loop.project
    info = json.loads((project / "models/classifier/training_info.json").read_text())
    assert info["labels"] == ["very negative", "negative", "neutral", "positive",
                              "very positive", NEW_CLASS]
    card = (project / "models/classifier/README.md").read_text()
    assert "models/v1" in card and NEW_CLASS in card
    exps = experiments(project, "--all-commits")    # week-49's baseline is HEAD~1 now
    candidate = exps["week-49"]
    assert candidate["params"]["model"]["init_from"] == "models/v1"
    shown = readme_loop.step("loop-retrain", "dvc exp show")
    assert "week-49" in shown.stdout
    page = (project / "reports/experiments.md").read_text()
    assert "week-49" in page


def test_promotion_tags_name_the_served_and_the_new_model(readme_loop):
    project = readme_loop.project
    tags = subprocess.run(["git", "tag", "--list", "text-classifier@*"], cwd=project,
                          capture_output=True, text=True).stdout.split()
    assert tags == ["text-classifier@v1.0.0", "text-classifier@v1.1.0"]
    head = subprocess.run(["git", "rev-parse", "HEAD", "text-classifier@v1.1.0^{}"],
                          cwd=project, capture_output=True, text=True).stdout.split()
    assert head[0] == head[1]
    assert "text-classifier:" in git_show(project, "HEAD", "dvc.yaml").decode()


def test_the_running_server_loads_the_new_version_and_answers_with_it(readme_loop):
    load = json.loads(readme_loop.step("loop-retrain", "curl -s -X POST").stdout)
    assert load["model_version"] == answers(readme_loop, 50)["model_version"]
    assert load["model_version"] != answers(readme_loop, 49)["model_version"]
    assert NEW_CLASS in load["labels"]
    assert {p["label"] for p in answers(readme_loop, 50)["predictions"]} <= set(load["labels"])


def test_kill_stops_the_server(readme_loop):
    with pytest.raises(ProcessLookupError):
        os.kill(readme_loop.server_pid, 0)
    log = (readme_loop.project / "logs/serve.log").read_text()
    assert "Finished server process" in log and "Traceback" not in log
