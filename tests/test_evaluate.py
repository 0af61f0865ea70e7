"""`textclf evaluate` on a user's own test file: every bad input is one line naming the
file, column and rows; an output folder that holds an input or the user's own files is
never replaced."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import LABELS, REPO
from serve_harness import build_model_folder
from textclf import evaluate


@pytest.fixture(scope="module")
def model_folder(tiny_model_dir, tmp_path_factory):
    return build_model_folder(tiny_model_dir, tmp_path_factory.mktemp("evaluate") / "model")


def run(argv, capsys) -> tuple[int, str]:
    try:
        evaluate.main([str(a) for a in argv])
    except SystemExit as exited:
        return exited.code, capsys.readouterr().err
    return 0, capsys.readouterr().err


@pytest.fixture
def params(tmp_path):
    found = yaml.safe_load((REPO / "params.yaml").read_text())
    found["evaluate"]["precision"] = "fp32"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(found))
    return path


def test_a_test_file_of_any_format_with_labels_spelt_otherwise(model_folder, params, tmp_path,
                                                               capsys):
    test = tmp_path / "mine.jsonl"
    rows = [{"text": "great, I love it", "label": f" {LABELS[-1]} "},
            {"text": "awful", "label": f"{LABELS[0]}\u00a0"}]
    test.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, err = run(["--params", params, "--model-dir", model_folder, "--test", test,
                     "--live-dir", tmp_path / "eval"], capsys)
    assert code == 0, err
    assert f"{len(LABELS) - 2} of the model's labels have no example in" in err
    per_class = json.loads((tmp_path / "eval" / "per_class.json").read_text())
    assert [per_class[label]["support"] for label in LABELS] == [1] + [0] * (
        len(LABELS) - 2) + [1]


@pytest.mark.parametrize("case, message", [
    ("csv", "mine.csv: column 'label', row 2: expected one of the model's labels"),
    ("unknown label", "column 'label', rows 1, 3: expected one of the model's labels ("),
    ("number label", "column 'label', row 1: expected one of the model's labels"),
    ("empty text", "column 'text', row 2: expected text to label, found '\\u200b'"),
    ("missing text", "column 'text', row 1: expected text to label, found"),
    ("other columns", "no column 'text'; found columns: review, y"),
])
def test_bad_test_files_are_one_line_errors(model_folder, params, tmp_path, capsys, case,
                                            message):
    frame = {"csv": pd.DataFrame({"text": ["good", "bad"], "label": [LABELS[0], "terrible"]}),
             "unknown label": pd.DataFrame({"text": ["a", "b", "c"],
                                            "label": ["terrible", LABELS[0], "awful"]}),
             "number label": pd.DataFrame({"text": ["a"], "label": [3]}),
             "empty text": pd.DataFrame({"text": ["a", "\u200b"], "label": [LABELS[0]] * 2}),
             "missing text": pd.DataFrame({"text": [None, "b"], "label": [LABELS[0]] * 2}),
             "other columns": pd.DataFrame({"review": ["a"], "y": [LABELS[0]]})}[case]
    test = tmp_path / ("mine.csv" if case == "csv" else "mine.parquet")
    frame.to_csv(test, index=False) if case == "csv" else frame.to_parquet(test)
    code, err = run(["--params", params, "--model-dir", model_folder, "--test", test,
                     "--live-dir", tmp_path / "eval"], capsys)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "eval").exists()


@pytest.mark.parametrize("case", ["holds the test file", "is the model folder",
                                  "the user's own folder"])
def test_a_live_dir_that_is_not_evaluates_own_is_never_replaced(model_folder, params,
                                                                 tmp_path, capsys, case):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    test = mine / "test.parquet"
    pd.DataFrame({"text": ["a"], "label": [LABELS[0]]}).to_parquet(test)
    live, expected = {"holds the test file": (mine, "holds the --test"),
                      "is the model folder": (model_folder, "holds the --model-dir"),
                      "the user's own folder": (mine, "holds files but no metrics.json")}[case]
    if case == "the user's own folder":
        test = tmp_path / "test.parquet"
        pd.DataFrame({"text": ["a"], "label": [LABELS[0]]}).to_parquet(test)
    before = sorted(p.name for p in live.iterdir())
    code, err = run(["--params", params, "--model-dir", model_folder, "--test", test,
                     "--live-dir", live], capsys)
    assert code == 2 and expected in err, err
    assert sorted(p.name for p in live.iterdir()) == before


def test_the_core_scores_calibrated_probabilities_and_keeps_the_raw_ones_beside():
    from textclf.evaluate import evaluate
    from textclf.model.calibration import Calibration

    raw = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]], dtype=np.float32)
    scored = evaluate(raw, ["a", "b", "b", "b"], ["a", "b"], Calibration(2.0))

    assert scored.predicted == ["a", "b", "a", "b"] and scored.actual_ids.tolist() == [0, 1, 1, 1]
    assert scored.scores["accuracy"] == 0.75
    np.testing.assert_allclose(scored.probs, Calibration(2.0).apply(raw))
    assert set(scored.calibration) >= {"calibrated", "uncalibrated"}
    assert evaluate(raw, ["a", "b", "b", "b"], ["a", "b"], None).probs is raw
