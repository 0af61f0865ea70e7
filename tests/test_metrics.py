"""Classification metrics against values worked out by hand."""

from __future__ import annotations

import json

import pytest

from textclf.metrics import classification_metrics, macro_f1

# Worked example, labels a, b, c:
#   a: 3 true, predicted a twice (both right)     -> P 2/2, R 2/3, F1 0.8
#   b: 2 true, predicted b twice (one right)      -> P 1/2, R 1/2, F1 0.5
#   c: 1 true, predicted c twice (one right)      -> P 1/2, R 1/1, F1 2/3
Y_TRUE = ["a", "a", "a", "b", "b", "c"]
Y_PRED = ["a", "a", "b", "b", "c", "c"]


def test_known_example():
    metrics = classification_metrics(Y_TRUE, Y_PRED, ["a", "b", "c"])

    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["f1_macro"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert metrics["f1_weighted"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 1 * 2 / 3) / 6)
    expected = {"a": (1.0, 2 / 3, 0.8, 3), "b": (0.5, 0.5, 0.5, 2), "c": (0.5, 1.0, 2 / 3, 1)}
    assert list(metrics["per_class"]) == ["a", "b", "c"]
    for label, (precision, recall, f1, support) in expected.items():
        got = metrics["per_class"][label]
        assert got["precision"] == pytest.approx(precision)
        assert got["recall"] == pytest.approx(recall)
        assert got["f1"] == pytest.approx(f1)
        assert got["support"] == support


def test_macro_f1_matches_the_dict():
    labels = ["a", "b", "c"]

    assert macro_f1(Y_TRUE, Y_PRED, labels) == classification_metrics(
        Y_TRUE, Y_PRED, labels)["f1_macro"]


def test_a_label_never_predicted_still_counts_in_the_macro_average():
    # c is never predicted: its precision is 0/0, scored as 0 (zero_division=0), not skipped.
    metrics = classification_metrics(["a", "a", "b", "c"], ["a", "a", "b", "b"], ["a", "b", "c"])

    assert metrics["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0,
                                         "support": 1}
    assert metrics["per_class"]["b"]["f1"] == pytest.approx(2 / 3)
    assert metrics["f1_macro"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert metrics["f1_weighted"] == pytest.approx((2 * 1 + 1 * 2 / 3 + 1 * 0) / 4)
    assert metrics["accuracy"] == pytest.approx(3 / 4)


def test_a_label_absent_from_both_sides_still_counts_in_the_macro_average():
    metrics = classification_metrics(["a", "b"], ["a", "b"], ["a", "b", "c"])

    assert metrics["per_class"]["c"]["support"] == 0
    assert metrics["f1_macro"] == pytest.approx(2 / 3)
    assert metrics["f1_weighted"] == pytest.approx(1.0)  # weights are supports
    assert metrics["accuracy"] == 1.0


def test_perfect_predictions_score_one():
    metrics = classification_metrics(Y_TRUE, Y_TRUE, ["a", "b", "c"])

    assert metrics["accuracy"] == metrics["f1_macro"] == metrics["f1_weighted"] == 1.0
    assert all(c["precision"] == c["recall"] == c["f1"] == 1.0
               for c in metrics["per_class"].values())


def test_label_order_changes_the_listing_not_the_scores():
    forward = classification_metrics(Y_TRUE, Y_PRED, ["a", "b", "c"])
    backward = classification_metrics(Y_TRUE, Y_PRED, ["c", "b", "a"])

    assert list(backward["per_class"]) == ["c", "b", "a"]
    assert backward["per_class"] == forward["per_class"]
    assert backward["f1_macro"] == pytest.approx(forward["f1_macro"])


def test_integer_labels_give_string_keys_and_plain_json_types():
    metrics = classification_metrics([0, 1, 1], [0, 1, 0], [0, 1])

    assert list(metrics["per_class"]) == ["0", "1"]
    assert type(metrics["accuracy"]) is float
    assert type(metrics["per_class"]["1"]["support"]) is int
    assert json.loads(json.dumps(metrics)) == metrics


def test_dvc_shows_the_headline_scores_only():
    """`dvc exp show` gets a column per key of every DVC metrics file: only the test scores
    are metrics, so a comparison fits a terminal. The rest are plain (cache: false) outputs."""
    import yaml

    from harness import REPO

    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())
    assert pipeline["metrics"] == ["metrics/evaluate/metrics.json"]
    outs = {next(iter(o)) if isinstance(o, dict) else o: o
            for stage in pipeline["stages"].values() for o in stage.get("outs", [])}
    assert outs["metrics/class_counts.json"]["metrics/class_counts.json"] == {"cache": False}
    assert not any("metrics" in stage for stage in pipeline["stages"].values())


@pytest.mark.parametrize("seed", range(5))
def test_macro_f1_agrees_with_sklearn_including_missing_and_unknown_classes(seed):
    """macro_f1 is computed from counts (no sklearn import in training); it must give
    sklearn's number, also for a class never predicted or never present, and for labels
    outside the list."""
    import numpy as np
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(seed)
    labels = ["a", "b", "c", "d", "e"]
    y_true = rng.choice(["a", "b", "c", "z"], size=60).tolist()   # d, e never present
    y_pred = rng.choice(["a", "b", "d", "z"], size=60).tolist()   # c, e never predicted
    expected = f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    assert macro_f1(y_true, y_pred, labels) == pytest.approx(expected, abs=1e-12)
    assert macro_f1(np.array([1, 2, 2]), np.array([1, 2, 0]), range(3)) == pytest.approx(
        f1_score([1, 2, 2], [1, 2, 0], labels=[0, 1, 2], average="macro", zero_division=0))


@pytest.mark.parametrize("seed", range(5))
def test_classification_metrics_agree_with_sklearn(seed):
    """The evaluate stage's scores come from counts (no sklearn import there): accuracy,
    weighted F1 and every per-class number must be sklearn's, including a class never
    predicted, one never present, and labels outside the list."""
    import numpy as np
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    rng = np.random.default_rng(seed)
    labels = ["a", "b", "c", "d", "e"]
    y_true = rng.choice(["a", "b", "c", "z"], size=60).tolist()
    y_pred = rng.choice(["a", "b", "d", "z"], size=60).tolist()
    got = classification_metrics(y_true, y_pred, labels)
    assert got["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-12)
    assert got["f1_weighted"] == pytest.approx(
        f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0), abs=1e-12)
    assert got["f1_macro"] == pytest.approx(
        f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0), abs=1e-12)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    for i, label in enumerate(labels):
        assert got["per_class"][label] == pytest.approx(
            {"precision": precision[i], "recall": recall[i], "f1": f1[i],
             "support": support[i]}, abs=1e-12)


def test_metrics_of_nothing_are_zero_not_nan():
    got = classification_metrics([], [], ["a", "b"])
    assert got["accuracy"] == got["f1_macro"] == got["f1_weighted"] == 0.0
