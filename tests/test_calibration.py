"""Calibrated probabilities: temperature scaling (Guo et al. 2017), the calibration metrics
on known answers, and how a model folder records the temperature."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from textclf.evaluate import calibration_scores, headline
from textclf.metrics import (brier_score, calibration_metrics, classwise_calibration_error,
                             expected_calibration_error, negative_log_likelihood,
                             reliability_table)
from textclf.model.calibration import Calibration, fit_temperature
from textclf.model.folder import FORMAT_VERSION, ModelError, TrainingInfo


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def well_specified(n: int = 20000, classes: int = 5, seed: int = 0):
    """Logits, and labels drawn from their own softmax: calibrated by construction."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=1.5, size=(n, classes))
    probs = softmax(logits)
    labels = (probs.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1)
    return logits, np.minimum(labels, classes - 1)


# Two classes, five examples; hand-computed below. Top-label confidences 0.9 and 0.88 share
# bin 13 of 15 ((13/15, 14/15]); 0.62, 0.7 and 0.75 are alone in bins 9, 10 and 11.
TINY_PROBS = np.array([[0.9, 0.1], [0.62, 0.38], [0.3, 0.7], [0.25, 0.75], [0.88, 0.12]])
TINY_LABELS = np.array([0, 1, 1, 0, 1])          # right, wrong, right, wrong, wrong


def test_ece_nll_and_brier_of_a_hand_computed_example():
    # bin 13: confidence 0.89, accuracy 1/2 -> 2 x 0.39; then 0.62, 0.3 and 0.75
    assert expected_calibration_error(TINY_PROBS, TINY_LABELS) == pytest.approx(
        (2 * 0.39 + 0.62 + 0.3 + 0.75) / 5)
    true_prob = [0.9, 0.38, 0.7, 0.25, 0.12]
    assert negative_log_likelihood(TINY_PROBS, TINY_LABELS) == pytest.approx(
        -sum(math.log(p) for p in true_prob) / 5)
    # two classes: (p_true - 1)^2 + (1 - p_true)^2 per example
    assert brier_score(TINY_PROBS, TINY_LABELS) == pytest.approx(
        sum(2 * (1 - p) ** 2 for p in true_prob) / 5)
    # class 0: bins of p_0 {0.9, 0.88} (1 hit, mass 1.78), {0.62}, {0.3}, {0.25} (1 hit);
    # class 1 mirrors it: |1 - 1.78| + 0.62 + 0.3 + 0.75 = 2.45 over 5 for each class
    assert classwise_calibration_error(TINY_PROBS, TINY_LABELS) == pytest.approx(2.45 / 5)


def test_reliability_table_lists_the_non_empty_bins():
    table = reliability_table(TINY_PROBS, TINY_LABELS)
    assert [(row["bin"], row["count"]) for row in table] == [(9, 1), (10, 1), (11, 1), (13, 2)]
    last = table[-1]
    assert (last["confidence"], last["accuracy"]) == (pytest.approx(0.89), 0.5)
    assert (last["lower"], last["upper"]) == (pytest.approx(13 / 15), pytest.approx(14 / 15))


def test_ece_of_calibrated_probabilities_is_near_zero():
    logits, labels = well_specified()
    probs = softmax(logits)
    assert expected_calibration_error(probs, labels) < 0.015
    assert classwise_calibration_error(probs, labels) < 0.01
    # and a constant overconfidence shows: always 0.99 sure, right as often as above
    sure = np.full_like(probs, 0.01 / 4)
    sure[np.arange(len(probs)), probs.argmax(axis=1)] = 0.99
    accuracy = (probs.argmax(axis=1) == labels).mean()
    assert expected_calibration_error(sure, labels) == pytest.approx(0.99 - accuracy)


def test_temperature_scaling_repairs_overconfident_logits():
    logits, labels = well_specified()
    overconfident = softmax(3 * logits)     # the well-specified logits, times 3
    calibration = fit_temperature(overconfident, labels)
    assert calibration.temperature == pytest.approx(3.0, rel=0.03)
    repaired = calibration.apply(overconfident)
    before = calibration_metrics(overconfident, labels)
    after = calibration_metrics(repaired, labels)
    assert before["ece"] > 0.2 and after["ece"] < 0.015
    assert after["nll"] < before["nll"] and after["brier"] < before["brier"]
    # as good as the true probabilities, which no temperature can beat on NLL by much
    assert after["nll"] == pytest.approx(negative_log_likelihood(softmax(logits), labels),
                                         abs=2e-3)


def test_underconfident_probabilities_get_a_temperature_below_one():
    logits, labels = well_specified(n=5000)
    assert fit_temperature(softmax(logits / 2), labels).temperature == pytest.approx(0.5, rel=0.05)


def test_apply_keeps_every_predicted_label_and_returns_float32_probabilities():
    logits, _ = well_specified(n=500)
    probs = softmax(logits).astype(np.float32)
    for temperature in (0.3, 1.0, 2.5):
        out = Calibration(temperature).apply(probs)
        assert out.dtype == np.float32 and out.shape == probs.shape
        assert (out.argmax(axis=1) == probs.argmax(axis=1)).all()
        np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(Calibration(1.0).apply(probs), probs, atol=1e-6)
    assert Calibration(2.0).apply(np.zeros((0, 5), np.float32)).shape == (0, 5)


@pytest.mark.parametrize("temperature", [0.5, 3.0, 5.0])
def test_apply_is_softmax_of_the_logits_over_t_for_confident_rows_too(temperature):
    # A 35-point logit gap: probabilities down to 1e-17, which a 1e-12 floor used to
    # lift, moving a calibrated 0.998 to 0.984 at T = 5.
    logits = np.array([[40.0, 5, 3, 2, 1], [2.0, 1.5, 0, -1, -3]])
    probs = torch.softmax(torch.tensor(logits, dtype=torch.float32), dim=1).numpy()
    exact = torch.softmax(torch.tensor(logits) / temperature, dim=1).numpy()

    calibrated = Calibration(temperature).apply(probs)

    np.testing.assert_allclose(calibrated, exact, atol=2e-6)


def test_a_perfectly_separated_split_stops_at_the_bound():
    probs = np.array([[0.6, 0.4], [0.3, 0.7]])
    assert fit_temperature(probs, np.array([0, 1])).temperature == pytest.approx(0.05)


def test_training_info_round_trip_with_calibration(tmp_path):
    info = TrainingInfo(labels=["a", "b"], max_length=8, base_model="x",
                        calibration=Calibration(1.7).to_dict())
    info.save(tmp_path)
    raw = json.loads((tmp_path / "training_info.json").read_text())
    assert raw["format_version"] == FORMAT_VERSION == 2
    assert raw["calibration"] == {"method": "temperature", "temperature": 1.7}
    loaded = TrainingInfo.load(tmp_path)
    assert loaded == info and loaded.calibrator() == Calibration(1.7)
    assert TrainingInfo(labels=["a", "b"], max_length=8, base_model="x").calibrator() is None


@pytest.mark.parametrize("raw", [
    {"format_version": 1, "labels": ["a", "b"], "max_length": 8, "base_model": "x"},
    # unversioned (textclf 0.1.0)
    {"labels": ["a", "b"], "params": {"model": {"max_length": 8, "name": "x"}}},
])
def test_older_folders_read_as_uncalibrated(tmp_path, raw):
    (tmp_path / "training_info.json").write_text(json.dumps(raw))
    info = TrainingInfo.load(tmp_path)
    assert info.calibration is None and info.calibrator() is None
    assert info.format_version == FORMAT_VERSION     # upgraded on read


@pytest.mark.parametrize("calibration, expected", [
    ({"method": "temperature", "temperature": -1.0}, "calibration.temperature must be a positive"),
    ({"method": "temperature", "temperature": "2"}, "calibration.temperature must be a positive"),
    ({"method": "temperature", "temperature": True}, "calibration.temperature must be a positive"),
    ({"method": "temperature"}, "calibration.temperature must be a positive"),
    ({"method": "platt", "temperature": 2.0}, "calibration.method must be one of temperature"),
    ({"temperature": 2.0, "bias": 0.1}, "unknown field calibration.bias"),
    ([2.0], "calibration must be an object"),
])
def test_a_malformed_calibration_is_refused_naming_the_field(tmp_path, calibration, expected):
    (tmp_path / "training_info.json").write_text(json.dumps(
        {"format_version": 2, "labels": ["a", "b"], "max_length": 8, "base_model": "x",
         "calibration": calibration}))
    with pytest.raises(ModelError, match=expected) as err:
        TrainingInfo.load(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_evaluate_reports_before_and_after_and_keeps_the_headline_short():
    calibration = Calibration(2.0)
    report = calibration_scores(TINY_LABELS, TINY_PROBS, calibration.apply(TINY_PROBS),
                                calibration)
    assert report["temperature"] == 2.0 and report["bins"] == 15
    assert report["uncalibrated"] == calibration_metrics(TINY_PROBS, TINY_LABELS)
    scores = {"accuracy": 0.4, "f1_macro": 0.4, "f1_weighted": 0.4, "per_class": {}}
    shown = headline(scores)
    assert list(shown) == ["accuracy", "f1_macro", "f1_weighted"]  # exp show stays narrow
    # no calibration in the folder: the same probabilities on both sides
    plain = calibration_scores(TINY_LABELS, TINY_PROBS, TINY_PROBS, None)
    assert plain["temperature"] is None and plain["calibrated"] == plain["uncalibrated"]


def test_fresh_and_warm_started_training_both_record_a_temperature(tiny_model_dir, tmp_path,
                                                                   monkeypatch):
    """`textclf train` in-process, then again from its model folder (`model.init_from`)."""
    import yaml

    from conftest import LABELS, REPO, toy_reviews
    from textclf import train
    from textclf.data.dataset import write_labels, write_split

    data = toy_reviews(per_class=10)
    for name, part in {"train": data, "val": data.iloc[::2]}.items():
        write_split(part, tmp_path / f"{name}.parquet")
    write_labels(LABELS, tmp_path / "labels.json")
    monkeypatch.setenv("TEXTCLF_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"]["name"] = str(tiny_model_dir)
    params["train"].update(epochs=1, batch_size=8, lr=3e-3, precision="fp32")
    for run, init_from in (("fresh", None), ("warm", str(tmp_path / "fresh" / "model"))):
        params["model"]["init_from"] = init_from
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        train.main(["--params", str(tmp_path / "params.yaml"),
                    "--train", str(tmp_path / "train.parquet"),
                    "--val", str(tmp_path / "val.parquet"),
                    "--labels", str(tmp_path / "labels.json"),
                    "--model-dir", str(tmp_path / run / "model"),
                    "--live-dir", str(tmp_path / run / "live")])
        calibration = TrainingInfo.load(tmp_path / run / "model").calibrator()
        summary = json.loads((tmp_path / run / "live" / "metrics.json").read_text())
        assert calibration is not None and calibration.temperature > 0
        assert summary["calibration"]["temperature"] == calibration.temperature
        # the fit minimises validation NLL, so it is never worse than T = 1 there
        assert summary["calibration"]["nll"] <= summary["calibration"]["nll_uncalibrated"] + 1e-9
