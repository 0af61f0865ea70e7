"""Choosing what to label: the strategies (textclf.monitoring.selection), the `select`
command from a prediction log and from a file, and Label Studio files out and back in
(textclf.data.label_studio)."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from conftest import LABELS
from serve_harness import build_model_folder
from textclf import select as command
from textclf.data.dataset import DataError
from textclf.data.label_studio import (CHOICES_NAME, labelling_config, prediction_tasks,
                                       read_export)
from textclf.monitoring.selection import (entropy_uncertainty, k_center_greedy,
                                          margin_uncertainty, select, unseen_rows)

TIME = "2026-11-28T12:00:00.000+00:00"


def unit(*angles_degrees: float) -> np.ndarray:
    """Unit vectors in the plane, one per angle: hand-made sentence embeddings."""
    radians = np.deg2rad(angles_degrees)
    return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)


def spread(count: int) -> np.ndarray:
    """Orthogonal unit vectors: no two texts are near-duplicates."""
    return np.eye(count, dtype=np.float32)


# the strategies -------------------------------------------------------------------------

def test_margin_and_entropy_choose_the_least_sure_texts():
    probs = np.array([[0.90, 0.05, 0.05],     # sure
                      [0.40, 0.35, 0.25],     # smallest margin (0.05)
                      [0.50, 0.30, 0.20],
                      [0.34, 0.33, 0.33],     # near-uniform: highest entropy, margin 0.01
                      [0.70, 0.20, 0.10]])
    assert margin_uncertainty(probs) == pytest.approx([0.15, 0.95, 0.8, 0.99, 0.5])
    assert entropy_uncertainty(np.full((1, 4), 0.25)) == pytest.approx([1.0])
    vectors = spread(5)
    margin = select(probs, 2, "margin", lambda rows: vectors[rows])
    assert margin.rows.tolist() == [3, 1]
    assert margin.scores == pytest.approx([0.99, 0.95])
    assert select(probs, 1, "entropy", lambda rows: vectors[rows]).rows.tolist() == [3]


def test_k_center_greedy_spreads_over_clusters():
    # three tight clusters: near 0, 90 and 180 degrees
    vectors = unit(0, 2, 4, 90, 92, 180, 178)
    chosen = k_center_greedy(vectors, 3, max_similarity=0.999)
    assert chosen[0] == 0      # starts from the first (least sure) row
    assert {0, 1, 2} & set(chosen) and {3, 4} & set(chosen) and {5, 6} & set(chosen)
    assert chosen[1] in (5, 6)     # the farthest cluster next


def test_diverse_margin_spreads_the_least_sure_over_their_embeddings():
    # rows 0-3 are the least sure; 0, 1, 2 say the same thing, 3 something else
    probs = np.array([[0.40, 0.38, 0.22], [0.41, 0.37, 0.22], [0.42, 0.36, 0.22],
                      [0.45, 0.30, 0.25], [0.9, 0.05, 0.05], [0.95, 0.03, 0.02]])
    vectors = unit(0, 10, 20, 120, 240, 60)
    asked = []

    def embed(rows):
        asked.append(rows.tolist())
        return vectors[rows]

    diverse = select(probs, 2, "diverse-margin", embed, pool_factor=2)
    assert asked == [[0, 1, 2, 3]]                 # only the shortlist is embedded
    assert diverse.rows.tolist() == [0, 3]
    # margin alone takes the two alike (cosine 0.985)
    assert select(probs, 2, "margin", lambda r: vectors[r],
                  max_similarity=0.99).rows.tolist() == [0, 1]


def test_near_duplicates_are_skipped_by_every_strategy():
    probs = np.array([[0.40, 0.39, 0.21], [0.40, 0.38, 0.22], [0.50, 0.30, 0.20],
                      [0.90, 0.05, 0.05]])
    vectors = unit(0, 1, 90, 180)      # rows 0 and 1: cosine 0.9998
    for strategy in ("margin", "entropy", "diverse-margin", "random"):
        chosen = select(probs, 2, strategy, lambda rows: vectors[rows], pool_factor=2)
        assert len(chosen.rows) == 2 and not {0, 1} <= set(chosen.rows.tolist()), strategy
    margin = select(probs, 2, "margin", lambda rows: vectors[rows])
    assert margin.rows.tolist() == [0, 2] and margin.near_duplicates == 1
    assert select(probs, 2, "margin", lambda rows: vectors[rows],
                  max_similarity=1.0).rows.tolist() == [0, 1]


def test_the_shortlist_grows_when_near_duplicates_leave_fewer_than_n():
    # 40 near-copies of one text, the least sure, then 6 distinct texts
    probs = np.array([[0.34, 0.33, 0.33]] * 40 + [[0.6, 0.3, 0.1]] * 6)
    vectors = np.zeros((46, 8), dtype=np.float32)
    vectors[:40, :2] = unit(*np.linspace(0, 2, 40))     # within 2 degrees: cosine > 0.999
    vectors[40:, 2:] = spread(6)
    asked: list[list[int]] = []

    def embed(rows):
        asked.append(rows.tolist())
        return vectors[rows]

    for strategy in ("margin", "entropy", "diverse-margin", "random"):
        asked.clear()
        chosen = select(probs, 5, strategy, embed, pool_factor=2, seed=1)
        assert len(chosen.rows) == 5, strategy                  # not 1: the list grew
        assert len(set(chosen.rows.tolist()) & set(range(40))) <= 1, strategy
        embedded = [row for rows in asked for row in rows]
        assert len(embedded) == len(set(embedded)), strategy    # each row embedded once
    # and where the candidates run out, fewer come back
    assert len(select(probs[:40], 5, "margin", lambda r: vectors[r]).rows) == 1


def test_excluded_and_repeated_texts_are_not_candidates():
    texts = ["Great movie", "bad", "Great\u00a0 movie ", "fine", "dull", "bad"]
    rows = unseen_rows(texts, {"dull"})
    # one row per text once normalised (its last), none that is excluded
    assert rows.tolist() == [2, 3, 5]
    probs = np.full((len(texts), 2), 0.5)
    chosen = select(probs, 10, "margin", lambda r: spread(len(texts))[r], candidates=rows)
    assert sorted(chosen.rows.tolist()) == [2, 3, 5]


def test_random_is_seeded():
    probs = np.full((50, 3), 1 / 3)
    vectors = spread(50)
    first = select(probs, 5, "random", lambda r: vectors[r], seed=3).rows.tolist()
    assert first == select(probs, 5, "random", lambda r: vectors[r], seed=3).rows.tolist()
    assert first != select(probs, 5, "random", lambda r: vectors[r], seed=4).rows.tolist()
    assert len(set(first)) == 5


# the command ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_folder(tiny_model_dir, tmp_path_factory):
    return build_model_folder(tiny_model_dir, tmp_path_factory.mktemp("select") / "model")


def test_sentence_embeddings_are_unit_length_and_ignore_padding(model_folder):
    from textclf.model.embeddings import sentence_embeddings
    from textclf.model.loading import load_classifier

    model, tokenizer, info = load_classifier(model_folder)
    texts = ["short", "a much longer text than the first one, padded less", "short"]
    together = sentence_embeddings(model, tokenizer, texts, info.max_length, batch_size=8)
    assert together.shape == (3, model.config.hidden_size)
    assert np.linalg.norm(together, axis=1) == pytest.approx([1, 1, 1], abs=1e-5)
    alone = sentence_embeddings(model, tokenizer, ["short"], info.max_length)
    # in input order, and the same whether padded beside a longer text or not
    assert together[0] == pytest.approx(alone[0], abs=1e-5)
    assert together[2] == pytest.approx(alone[0], abs=1e-5)
    assert float(together[0] @ together[1]) < 0.999


def log_line(request_id: str, text: str, probabilities: list[float]) -> str:
    """One prediction log line in textclf.serving.log's schema, written by hand."""
    best = int(np.argmax(probabilities))
    return json.dumps({"time": TIME, "request_id": request_id, "model_version": "sha256:abc",
                       "text": text, "label": LABELS[best], "probability": probabilities[best],
                       "probabilities": dict(zip(LABELS, probabilities))})


def write_log(folder, requests: dict[str, list[tuple[str, list[float]]]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [log_line(rid, text, p) for rid, texts in requests.items() for text, p in texts]
    (folder / "predictions-2026-11-28.jsonl").write_text("\n".join(lines) + "\n")


UNSURE = [0.3, 0.28, 0.2, 0.12, 0.1]
SURE = [0.9, 0.04, 0.03, 0.02, 0.01]


def run_select(argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        command.main([str(a) for a in argv])
        raise SystemExit(0)
    return exited.value.code, capsys.readouterr().err


def test_select_from_a_prediction_log(model_folder, tmp_path, capsys):
    logs = tmp_path / "logs"
    write_log(logs, {
        "r1": [("an unsure review of the plot", UNSURE), ("a sure thing", SURE)],
        "r2": [("the training data text", UNSURE), ("labelled already by someone", UNSURE)],
        "r3": [("another unsure one about the acting", [0.25, 0.24, 0.2, 0.16, 0.15]),
               ("an unsure  review of the plot", UNSURE)]})       # a repeat, spelt otherwise
    (logs / "feedback").mkdir()
    (logs / "feedback" / "feedback-2026-11-28.jsonl").write_text(json.dumps(
        {"time": TIME, "request_id": "r2", "index": 1, "label": "neutral",
         "source": "api"}) + "\n")
    train = tmp_path / "train.csv"
    pd.DataFrame({"text": ["the training data text "], "label": ["neutral"]}).to_csv(train)
    out, tasks = tmp_path / "selected.csv", tmp_path / "tasks.json"
    code, err = run_select([logs, "-n", 2, "--model", model_folder, "--strategy", "margin",
                            "--exclude", train, "--out", out, "--label-studio", tasks,
                            "--max-similarity", 1.0], capsys)
    assert code == 0, err
    chosen = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(chosen.columns) == command.COLUMNS
    # the two least sure, neither excluded nor labelled; a repeat counts once (its last)
    assert chosen[["request_id", "index", "text"]].values.tolist() == [
        ["r3", "0", "another unsure one about the acting"],
        ["r3", "1", "an unsure  review of the plot"]]
    assert chosen["predicted_label"].tolist() == [LABELS[0]] * 2
    assert chosen["probability"].astype(float).tolist() == [0.25, 0.3]
    assert chosen["score"].astype(float).tolist() == pytest.approx([0.99, 0.98])
    assert chosen["label"].tolist() == ["", ""]
    written = json.loads(tasks.read_text())
    assert written[0]["data"] == {"text": "another unsure one about the acting",
                                  "index": 0, "request_id": "r3"}
    prediction = written[0]["predictions"][0]
    assert prediction["model_version"] == "sha256:abc" and prediction["score"] == 0.25
    assert prediction["result"][0]["value"] == {"choices": [LABELS[0]]}
    config = tasks.with_suffix(".config.xml").read_text()
    assert all(f'<Choice value="{label}"/>' in config for label in LABELS)
    assert "2 of 3 candidate texts" in err and "(3 of 6 repeated, excluded or labelled" in err
    assert "warning" not in err
    # once labelled, the CSV goes back as feedback for the logged predictions
    from textclf.serving.label_files import matched_feedback, read_label_file

    chosen["label"] = ["neutral", "positive"]
    chosen.to_csv(out, index=False)
    rows, errors, _ = read_label_file(out)
    items, unmatched = matched_feedback(rows, logs, pd.Timestamp(TIME).to_pydatetime())
    assert not errors and not unmatched
    assert [(i.request_id, i.index, i.label) for i in items] == [("r3", 0, "neutral"),
                                                                ("r3", 1, "positive")]


def test_fewer_candidates_than_asked_and_formula_like_texts_are_said(model_folder, tmp_path,
                                                                     capsys):
    source, out = tmp_path / "new.csv", tmp_path / "selected.csv"
    texts = ['=HYPERLINK("http://example.invalid","click")', "a plain review"]
    pd.DataFrame({"text": texts}).to_csv(source, index=False)
    code, err = run_select([source, "-n", 5, "--model", model_folder, "--out", out], capsys)
    assert code == 0, err
    assert "2 of 2 candidate texts by random; only 2 candidates (0 of 2" in err
    assert "warning: 1 chosen text begins with =, +, -, @ or a tab" in err
    # the text stays as written: it is data, and comes back as the same text
    assert sorted(pd.read_csv(out)["text"]) == sorted(texts)


def test_select_from_a_file_uses_the_models_calibrated_probabilities(model_folder, tmp_path,
                                                                      capsys):
    from textclf.model.labeller import Labeller

    texts = ["great value, would buy again", "terrible, it broke", "it is fine I guess",
             "not sure what to think", "best purchase ever", "meh"]
    source = tmp_path / "new.csv"
    pd.DataFrame({"review": texts}).to_csv(source, index=False)
    out = tmp_path / "selected.csv"
    code, err = run_select([source, "-n", 3, "--model", model_folder, "--text-column",
                            "review", "--strategy", "entropy", "--precision", "fp32",
                            "--max-similarity", 1.0, "--out", out], capsys)
    assert code == 0, err
    probs = Labeller.load(model_folder, "fp32").probabilities(texts)
    expected = np.argsort(-entropy_uncertainty(probs), kind="stable")[:3]
    chosen = pd.read_csv(out, keep_default_na=False)
    assert chosen["index"].tolist() == [i + 1 for i in expected]      # rows, from 1
    assert chosen["text"].tolist() == [texts[i] for i in expected]
    assert chosen["probability"].tolist() == pytest.approx(probs.max(axis=1)[expected],
                                                           abs=1e-6)
    assert (chosen["request_id"] == "").all()


def test_label_studio_round_trip(tmp_path):
    rows = pd.DataFrame({"request_id": ["r1", ""], "index": [2, 5],
                         "text": ["loved it", "hated it"], "predicted_label": ["positive"] * 2,
                         "probability": [0.61, 0.55], "model_version": ["v1", "v1"]})
    tasks = prediction_tasks(rows)
    assert tasks[1]["data"] == {"text": "hated it", "index": 5}       # a file's: no request
    # Label Studio's JSON export: the tasks with ids, annotations, and the predictions kept
    export = []
    for number, (task, label) in enumerate(zip(tasks, ["very positive", "negative"]), 1):
        export.append({**task, "id": 40 + number, "project": 3, "annotations": [
            {"id": 7, "was_cancelled": True, "result": []},
            {"id": 8, "was_cancelled": False, "ground_truth": False, "lead_time": 3.2,
             "result": [{"id": "abc", "from_name": CHOICES_NAME, "to_name": "text",
                         "type": "choices", "origin": "prediction-changed",
                         "value": {"choices": [label]}}]}]})
    export.append({"id": 50, "data": {"text": "not labelled yet"}, "annotations": []})
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export))
    found = read_export(path, LABELS)
    assert [(r.text, r.label, r.request_id, r.index) for r in found.rows] == [
        ("loved it", "very positive", "r1", 2), ("hated it", "negative", None, 5)]
    assert found.unlabelled == 1
    # `textclf feedback import` reads the same export (textclf.serving.label_files)
    from textclf.serving.label_files import read_label_file

    imported, errors, skipped = read_label_file(path)
    assert not errors and skipped == 1
    assert (imported[0].request_id, imported[0].index, imported[0].label) == (
        "r1", 2, "very positive")


def test_labelling_config_escapes_labels():
    config = labelling_config(["a & b", 'say "hi"'])
    assert '<Choice value="a &amp; b"/>' in config
    assert "<Choice value='say \"hi\"'/>" in config
    assert f'<Choices name="{CHOICES_NAME}" toName="text" choice="single"' in config


@pytest.mark.parametrize("export, message", [
    ({"data": {}}, "expected a Label Studio JSON export (a list of tasks"),
    ([{"id": 9, "annotations": []}], "task 1 (id 9), field 'data'"),
    ([{"data": {"text": "x"}, "annotations": [{"result": [
        {"type": "choices", "value": {"choices": ["positive", "negative"]}}]}]}],
     "task 1, field 'annotations[0].result[].value.choices': expected a list of one label"),
    ([{"data": {"text": "x"}, "annotations": [{"result": [
        {"type": "choices", "value": {"choices": ["great"]}}]}]}],
     "unknown label 'great'"),
    ([{"data": {"text": "x", "index": -1}, "annotations": [{"result": [
        {"type": "choices", "value": {"choices": ["neutral"]}}]}]}], "field 'data.index'"),
    ([{"data": {"text": "x"}, "annotations": [{"result": []}]}] * 3,
     "found 0 (and 2 more malformed tasks)"),
])
def test_a_malformed_export_is_refused_naming_the_task(tmp_path, export, message):
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export))
    with pytest.raises(DataError, match=re.escape(message)):
        read_export(path, LABELS)


@pytest.mark.parametrize("case, message", [
    ("missing folder", "no such file or folder"),
    ("empty log", "hold no unlabelled predictions"),
    ("a log of damaged lines only", "hold no unlabelled predictions to choose from. Skipped 2 "
                                    "damaged log lines"),
    ("unknown column", "no column 'review'"),
    ("malformed export", "task 1, field 'data'"),
    ("all excluded", "no text left to choose"),
    ("out is a labelled file", "--out " ),
    ("tasks are an export given back", "--label-studio "),
    ("precision with a log", "--precision applies to a SOURCE file of texts"),
    ("strict with a file", "--strict applies to a prediction log folder"),
    ("a number for a text", "column 'text', row 1: expected text, found 7 (int)"),
])
def test_bad_inputs_give_one_line_errors(model_folder, tmp_path, capsys, case, message):
    logs = tmp_path / "logs"
    write_log(logs, {"r1": [("one text", UNSURE)]})
    texts = tmp_path / "texts.csv"
    pd.DataFrame({"text": ["one text"]}).to_csv(texts, index=False)
    source, extra = {"missing folder": (tmp_path / "nowhere", []),
                     "empty log": (tmp_path / "empty", []),
                     "a log of damaged lines only": (tmp_path / "damaged", []),
                     "unknown column": (texts, ["--text-column", "review"]),
                     "malformed export": (logs, ["--labelled", tmp_path / "bad.json"]),
                     "all excluded": (logs, ["--exclude", texts]),
                     "out is a labelled file": (logs, ["--labelled", tmp_path / "out.csv"]),
                     "tasks are an export given back": (
                         logs, ["--labelled", tmp_path / "tasks.json", "--label-studio",
                                tmp_path / "tasks.json"]),
                     "precision with a log": (logs, ["--precision", "fp32"]),
                     "strict with a file": (texts, ["--strict"]),
                     "a number for a text": (tmp_path / "numbers.jsonl", [])}[case]
    (tmp_path / "numbers.jsonl").write_text('{"text": 7}\n')
    if case == "out is a labelled file":
        pd.DataFrame({"text": ["labelled"], "label": ["positive"]}).to_csv(
            tmp_path / "out.csv", index=False)
    if case == "tasks are an export given back":
        (tmp_path / "tasks.json").write_text("[]")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "predictions-2026-11-28.jsonl").write_text("")
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "predictions-2026-11-28.jsonl").write_text(
        '{"time": "2026-11-28T10:00:00+00:00", "request_id": "r1", "ind\n'
        '{"time": "2026-11-28T10:00:01+00:00", "request_id": "r2", "index": 0, "te\n')
    (tmp_path / "bad.json").write_text(json.dumps([{"annotations": []}]))
    before = {path: path.read_bytes() for path in tmp_path.glob("*.*")}
    code, err = run_select([source, "-n", 1, "--model", model_folder, "--out",
                            tmp_path / "out.csv", *extra], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    if case in ("out is a labelled file", "tasks are an export given back"):
        assert "is the --labelled file" in err
        assert {path: path.read_bytes() for path in tmp_path.glob("*.*")} == before
    else:
        assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("argv, message", [
    (["-n", "0"], "expected a whole number between 1 and 1000000, found '0'"),
    (["-n", "1", "--max-similarity", "0"], "--max-similarity: expected a number above 0"),
    (["-n", "1", "--strategy", "best"], "invalid choice: 'best'"),
])
def test_bad_flags_are_refused_by_argparse(tmp_path, capsys, argv, message):
    code, err = run_select([tmp_path, *argv, "--out", tmp_path / "o.csv"], capsys)
    assert code == 2 and message in err
