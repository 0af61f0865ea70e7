"""Accuracy and macro-F1 estimated without labels (CBPE, ATC), the unreliable flag, and
how `textclf drift` shows them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import toy_reviews
from textclf import drift
from textclf.metrics import macro_f1
from textclf.monitoring.estimate import (MAX_RELIABLE_AUC, cbpe, expected_accuracy,
                                         expected_confusion, expected_f1_macro, fit_atc,
                                         f1_macro_interval, reliability)


def _calibrated(n: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random (N, C) probabilities and labels drawn from them: calibrated by construction."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(classes, 0.4), size=n)
    labels = (probs.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1).clip(max=classes - 1)
    return probs, labels


def test_cbpe_matches_the_accuracy_of_labels_drawn_from_the_probabilities():
    probs, labels = _calibrated(4000, 5, seed=0)
    estimate = cbpe(probs.max(axis=1), probs)
    true = float(np.mean(probs.argmax(axis=1) == labels))
    assert estimate.accuracy == pytest.approx(true, abs=0.02)
    assert estimate.accuracy_low <= true <= estimate.accuracy_high
    assert estimate.f1_macro == pytest.approx(macro_f1(labels, probs.argmax(axis=1), range(5)),
                                              abs=0.03)
    assert estimate.f1_macro_low < estimate.f1_macro < estimate.f1_macro_high


def test_the_accuracy_interval_covers_about_95_percent_of_windows():
    covered = []
    for seed in range(200):
        probs, labels = _calibrated(100, 3, seed)
        _, low, high = expected_accuracy(probs.max(axis=1))
        covered.append(low <= np.mean(probs.argmax(axis=1) == labels) <= high)
    assert 0.9 <= np.mean(covered) <= 0.99


def test_expected_accuracy_and_its_interval_by_hand():
    mean, low, high = expected_accuracy(np.tile([0.9, 0.7, 0.8, 0.6], 25))
    # variance of the number right: 25 * (0.09 + 0.21 + 0.16 + 0.24) over 100 texts
    half = 1.959963984540054 * np.sqrt(25 * 0.7) / 100
    assert (mean, low, high) == pytest.approx((0.75, 0.75 - half, 0.75 + half))
    assert expected_accuracy(np.array([1.0, 1.0])) == (1.0, 1.0, 1.0)


def test_expected_macro_f1_on_a_hand_computed_case():
    probs = np.array([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
    # [true, predicted]: rows 1-2 predict class 0, row 3 class 1
    assert expected_confusion(probs) == pytest.approx(np.array([[1.4, 0.3], [0.6, 0.7]]))
    # class 0: 2 * 1.4 / (1.7 actual + 2 predicted); class 1: 2 * 0.7 / (1.3 + 1)
    assert expected_f1_macro(probs) == pytest.approx((2.8 / 3.7 + 1.4 / 2.3) / 2)


def test_f1_interval_of_certain_predictions_is_a_point():
    probs = np.eye(3)[[0, 1, 2, 0]]
    assert f1_macro_interval(probs) == (1.0, 1.0)


def test_atc_threshold_reproduces_the_split_accuracy():
    top = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    fitted = fit_atc(top, np.array([1, 0, 1, 1, 0]))        # 3 of 5 right
    assert (fitted.threshold, fitted.accuracy, fitted.rows) == (0.6, 0.6, 5)
    assert fitted.estimate(top) == 0.6
    assert fitted.estimate(np.array([0.95, 0.65, 0.55, 0.3])) == 0.5
    assert fit_atc(top, np.ones(5)).estimate(top) == 1.0
    assert fit_atc(top, np.zeros(5)).estimate(top) == 0.0


def test_a_window_the_domain_classifier_tells_apart_is_unreliable():
    assert reliability(0.5).reliable
    flagged = reliability(0.97)
    assert not flagged.reliable and "0.970" in flagged.reason and "\n" not in flagged.reason
    assert reliability(MAX_RELIABLE_AUC).reliable
    assert not reliability(MAX_RELIABLE_AUC + 0.01).reliable


def test_moved_labels_leave_accuracy_trusted_but_not_macro_f1():
    moved = reliability(0.5, labels_moved=True)
    assert moved.reliable and not moved.f1_reliable and "macro-F1" in moved.f1_reason
    assert reliability(0.5).f1_reliable and not reliability(0.9, labels_moved=True).f1_reliable


# --- the command ---------------------------------------------------------------------------


def _run(tiny_model_dir, tmp_path, current: list[str]) -> dict:
    data = toy_reviews(per_class=8)
    data["label"] = [f"LABEL_{i % 3}" for i in range(len(data))]    # the tiny model's labels
    paths = {name: tmp_path / f"{name}.parquet" for name in ("train", "val", "test")}
    data.to_parquet(paths["train"], index=False)
    data.iloc[1::2].to_parquet(paths["val"], index=False)
    data.iloc[::2].to_parquet(paths["test"], index=False)
    pd.DataFrame({"text": current}).to_csv(tmp_path / "new.csv", index=False)
    drift.main(["--reference", str(paths["train"]), "--test", str(paths["test"]),
                "--validation", str(paths["val"]), "--model", str(tiny_model_dir),
                "--current", str(tmp_path / "new.csv"), "--out-dir", str(tmp_path / "reports"),
                "--metrics", str(tmp_path / "drift.json")])
    return json.loads((tmp_path / "drift.json").read_text())["performance"]


def test_drift_reports_the_estimate_beside_the_test_scores(tiny_model_dir, tmp_path):
    same = list(toy_reviews(per_class=8).text)
    found = _run(tiny_model_dir, tmp_path, same)
    assert {"estimate_reliable", "estimated_accuracy", "estimated_accuracy_low",
            "estimated_accuracy_high", "estimated_f1_macro", "atc_accuracy", "atc_threshold",
            "test_accuracy", "test_f1_macro"} <= set(found)
    assert found["estimate_reliable"] == 1
    assert found["estimated_accuracy_low"] <= found["estimated_accuracy"] \
        <= found["estimated_accuracy_high"]
    summary = (tmp_path / "reports" / "drift.md").read_text()
    page = (tmp_path / "reports" / "drift.html").read_text()
    assert "## Performance without labels" in summary and "Performance without labels" in page
    assert f"{found['estimated_accuracy']:.3f}" in summary and "ATC" in page
    assert "UNRELIABLE" not in summary
    assert "not calibrated" in summary        # the tiny model's folder has no temperature


def test_a_changed_window_marks_the_estimate_unreliable_everywhere(tiny_model_dir, tmp_path):
    news = [f"breaking news {i}: the senate voted on the budget bill today" for i in range(40)]
    found = _run(tiny_model_dir, tmp_path, news)
    assert found["estimate_reliable"] == 0
    summary = (tmp_path / "reports" / "drift.md").read_text()
    page = (tmp_path / "reports" / "drift.html").read_text()
    for text in (summary, page):
        assert "unreliable here" in text and "UNRELIABLE" in text and "AUC" in text


def test_the_test_split_is_refused_as_validation(tiny_model_dir, tmp_path, capsys):
    data = toy_reviews(per_class=4)
    data.to_parquet(tmp_path / "test.parquet", index=False)
    with pytest.raises(SystemExit):
        drift.main(["--reference", str(tmp_path / "test.parquet"),
                    "--test", str(tmp_path / "test.parquet"),
                    "--validation", str(tmp_path / "test.parquet"),
                    "--model", str(tiny_model_dir), "--current", str(tmp_path / "test.parquet"),
                    "--out-dir", str(tmp_path / "r"), "--metrics", str(tmp_path / "m.json")])
    assert "is the --test split" in capsys.readouterr().err


def test_logged_probabilities_become_a_matrix_in_the_model_label_order(tmp_path):
    import datetime as dt

    from textclf.monitoring.inputs import read_prediction_logs
    from textclf.serving.log import log_file_name, log_lines

    day = dt.datetime(2026, 11, 28, tzinfo=dt.timezone.utc)
    answers = [{"label": "b", "probability": 0.7, "probabilities": {"b": 0.7, "a": 0.3}},
               {"label": "a", "probability": 0.6, "probabilities": {"a": 0.6, "b": 0.4}}]
    (tmp_path / log_file_name(day.date(), 0)).write_bytes(
        log_lines(day, "r1", "v1", ["one", "two"], answers))
    window = read_prediction_logs(tmp_path)
    assert window.probability_matrix(["a", "b"]) == pytest.approx(np.array([[0.3, 0.7],
                                                                            [0.6, 0.4]]))
    assert window.probability_matrix(["a", "b", "c"]) is None     # another model's labels
