"""Accuracy and macro-F1 estimated without labels (CBPE, ATC), the texts' novelty, the
unreliable flag, and how `textclf drift` shows them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import toy_reviews
from textclf import drift
from textclf.metrics import macro_f1
from textclf.model.embeddings import layer_embeddings
from textclf.monitoring.estimate import (MAX_RELIABLE_AUC, MAX_RELIABLE_NOVELTY, cbpe,
                                         expected_accuracy, expected_confusion,
                                         expected_f1_macro, fit_atc, f1_macro_interval,
                                         reliability)
from textclf.monitoring.novelty import (NoveltyResult, compare_novelty, mann_whitney_auc,
                                        middle_layer, nearest_distance)


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


def test_the_texts_a_window_needs_for_an_interval_by_hand():
    # every text right with probability 0.8: one text's sd 0.4; +-3 points at 95% needs
    # (1.96 x 0.4 / 0.03)^2 = 682.9 texts, +-5 points 245.9
    estimate = cbpe(np.full(100, 0.8))
    assert estimate.text_sd == pytest.approx(0.4)
    assert (estimate.texts_for(3), estimate.texts_for(5)) == (683, 246)
    # and a window of that size has the interval it promised
    _, low, high = expected_accuracy(np.full(683, 0.8))
    assert (high - low) / 2 == pytest.approx(0.03, abs=0.0001)
    assert cbpe(np.ones(10)).texts_for(3) == 1          # certain predictions: any window


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


# --- novelty -------------------------------------------------------------------------------


def test_nearest_distance_is_the_cosine_distance_to_the_kth_nearest_reference():
    half = np.sqrt(0.5)
    reference = np.array([[1.0, 0.0], [0.0, 1.0], [half, half]])
    vectors = np.array([[1.0, 0.0], [0.6, 0.8]])
    # cosines: row 1 to the references 1, 0, 0.707; row 2: 0.6, 0.8, 0.98995
    # rounded to 1e-6, below which float32 cannot tell a text from a training text
    assert nearest_distance(vectors, reference) == pytest.approx([0.0, 1 - 1.4 * half],
                                                                 abs=1e-6)
    assert nearest_distance(vectors, reference, k=2) == pytest.approx([1 - half, 0.2],
                                                                      abs=1e-6)
    with pytest.raises(ValueError, match="k = 4"):
        nearest_distance(vectors, reference, k=4)


def test_mann_whitney_auc_by_hand_and_as_roc_auc():
    from sklearn.metrics import roc_auc_score

    assert mann_whitney_auc([3, 4], [1, 2]) == 1.0
    assert mann_whitney_auc([1, 2], [3, 4]) == 0.0
    assert mann_whitney_auc([1, 3], [2]) == 0.5
    assert mann_whitney_auc([2, 2], [2, 1]) == 0.75       # each 2 ties one, beats one
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.3, 1, 60).round(1), rng.normal(0, 1, 90).round(1)    # with ties
    assert mann_whitney_auc(a, b) == pytest.approx(
        roc_auc_score(np.r_[np.ones(60), np.zeros(90)], np.r_[a, b]))


def test_novel_share_counts_texts_beyond_95_percent_of_the_validation_texts():
    validation = np.linspace(0.0, 1.0, 101)               # 95% quantile: 0.95
    current = np.array([0.1, 0.5, 0.94, 0.96, 0.99])
    found = compare_novelty(current, validation, layer=3, reference_rows=10)
    assert found.novel_share == pytest.approx(2 / 5)
    assert found.auc == mann_whitney_auc(current, validation)
    assert (found.layer, found.reference_rows, found.validation_rows, found.current_rows) \
        == (3, 10, 101, 5)
    assert compare_novelty(validation, validation, 3, 10).auc == 0.5


def test_the_middle_layer_indexes_hidden_states():
    assert [middle_layer(n) for n in (1, 2, 6, 12)] == [1, 1, 3, 6]


def test_layer_embeddings_are_unit_vectors_whatever_the_batch(tiny_model_dir):
    from textclf.model.loading import load_classifier

    model, tokenizer, info = load_classifier(tiny_model_dir)
    texts = ["short", "a much longer text, with many more words than the other two",
             "a text of middle size"]
    together = layer_embeddings(model, tokenizer, texts, info.max_length, [0, 1],
                                batch_size=2)
    alone = layer_embeddings(model, tokenizer, texts[2:], info.max_length, [0, 1])
    assert together.shape == (2, 3, model.config.hidden_size)
    assert np.linalg.norm(together, axis=2) == pytest.approx(np.ones((2, 3)), abs=1e-5)
    assert together[:, 2] == pytest.approx(alone[:, 0], abs=1e-5)   # padding left out
    assert not np.allclose(together[0], together[1])
    assert layer_embeddings(model, tokenizer, [], info.max_length, [1]).shape == (1, 0, 32)


def test_layer_embeddings_stop_at_the_deepest_layer_asked_for_and_match_the_whole_pass(
        tiny_model_dir):
    import torch

    from textclf.model.embeddings import encoder_layers, mean_pooled
    from textclf.model.loading import load_classifier

    model, tokenizer, info = load_classifier(tiny_model_dir)
    texts = ["short", "a much longer text, with many more words than the other two"]
    blocks = encoder_layers(model)
    assert blocks is not None and len(blocks) == model.config.num_hidden_layers == 2
    calls = []
    handle = blocks[1].register_forward_hook(lambda *_: calls.append(1))
    try:
        early = layer_embeddings(model, tokenizer, texts, info.max_length, [1])
    finally:
        handle.remove()
    assert calls == []                                  # layer 2 never ran
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.inference_mode():
        whole = model(**batch, output_hidden_states=True)
    expected = mean_pooled(whole.hidden_states[1].float(), batch["attention_mask"]).numpy()
    assert early[0] == pytest.approx(expected, abs=1e-5)
    assert len(whole.hidden_states) == 3 and whole.logits.shape == (2, model.config.num_labels)
    both = layer_embeddings(model, tokenizer, texts, info.max_length, [2, 0])
    assert both[1] == pytest.approx(mean_pooled(whole.hidden_states[0].float(),
                                                batch["attention_mask"]).numpy(), abs=1e-5)


def _novelty(auc: float) -> NoveltyResult:
    return NoveltyResult(auc=auc, novel_share=0.3, layer=3, reference_rows=800,
                         validation_rows=188, current_rows=100)


def test_novel_texts_make_the_estimate_unreliable_where_the_domain_classifier_sees_nothing():
    flagged = reliability(0.5, novelty=_novelty(0.62))
    assert not flagged.reliable and not flagged.f1_reliable
    assert (flagged.domain_fired, flagged.novelty_fired) == (False, True)
    assert "novelty AUC 0.620 > " in flagged.reason and "domain classifier" not in flagged.reason
    both = reliability(0.9, novelty=_novelty(0.62))
    assert (both.domain_fired, both.novelty_fired) == (True, True)
    assert "AUC 0.900 >" in both.reason and "novelty AUC 0.620" in both.reason
    calm = reliability(0.5, novelty=_novelty(MAX_RELIABLE_NOVELTY))
    assert calm.reliable and "does not tell" in calm.reason and "novelty AUC" in calm.reason
    assert not reliability(0.5, novelty=_novelty(MAX_RELIABLE_NOVELTY + 0.01)).reliable
    assert "not measured" in reliability(0.5).reason


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
    # The training reviews as other people type them (capitalised): not training texts,
    # but nothing the lower-casing domain classifier and tokenizer can tell apart.
    same = [text.capitalize() for text in toy_reviews(per_class=8).text]
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
    # 40 texts cannot pin accuracy to 3 points: the page says how many would
    assert found["texts_for_3_points"] > 40
    assert f"about {found['texts_for_5_points']:,} texts like these narrow that to ±5" \
        in summary
    assert "not calibrated" in summary        # the tiny model's folder has no temperature
    # Every current and validation text is a training text: all at distance 0, all tied.
    assert (found["novelty_auc"], found["novel_share"]) == (0.5, 0.0)
    assert (found["unreliable_domain"], found["unreliable_novelty"]) == (0, 0)
    assert "novelty AUC: current farther" in summary and "novelty AUC 0.500" in page


def test_a_changed_window_marks_the_estimate_unreliable_everywhere(tiny_model_dir, tmp_path):
    news = [f"breaking news {i}: the senate voted on the budget bill today" for i in range(40)]
    found = _run(tiny_model_dir, tmp_path, news)
    assert found["estimate_reliable"] == 0
    # No news text is a training text; every validation text is one (distance 0).
    assert (found["novelty_auc"], found["novel_share"]) == (1.0, 1.0)
    assert found["unreliable_novelty"] == 1
    summary = (tmp_path / "reports" / "drift.md").read_text()
    page = (tmp_path / "reports" / "drift.html").read_text()
    for text in (summary, page):
        assert "unreliable here" in text and "UNRELIABLE" in text and "AUC" in text
        assert "novelty AUC 1.000 &gt;" in text or "novelty AUC 1.000 >" in text


def test_a_window_of_training_texts_or_repeats_is_said_and_not_trusted(tiny_model_dir,
                                                                       tmp_path):
    texts = list(toy_reviews(per_class=8).text)
    found = _run(tiny_model_dir, tmp_path, texts)        # the training texts themselves
    assert (found["estimate_reliable"], found["unreliable_other"]) == (0, 1)
    summary = (tmp_path / "reports" / "drift.md").read_text()
    assert "100% of the current texts are training texts, on which the model is right" \
        in summary
    # Each capitalised review sent 3 times: repeats, not a change of domain.
    once = [text.capitalize() for text in texts]
    _run(tiny_model_dir, tmp_path, once)
    report = json.loads((tmp_path / "drift.json").read_text())
    _run(tiny_model_dir, tmp_path, once * 3)
    again = json.loads((tmp_path / "drift.json").read_text())
    assert again["text_drift"] == report["text_drift"]
    assert again["performance"]["estimate_reliable"] == 1
    assert "80 of the 120 current texts repeat another (67%)" in \
        (tmp_path / "reports" / "drift.md").read_text()


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
