"""`precision: auto` takes int8 only where it keeps fp32's answers on the model's own
validation split: the measurement's arithmetic, its thresholds, its cache, and what predict
and serve do when it passes, fails or cannot be made."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import toy_reviews
from serve_harness import build_model_folder
from textclf.errors import UserError
from textclf.data.dataset import write_split
from textclf.model import int8_agreement, labeller
from textclf.model.folder import TrainingInfo
from textclf.model.int8_agreement import Agreement, measure, sample_rows

LABELS = ["a", "b", "c"]


def one_hot(ids: list[int], classes: int = 3) -> np.ndarray:
    probs = np.full((len(ids), classes), 0.1, np.float32)
    probs[np.arange(len(ids)), ids] = 0.8
    return probs


def test_measure_counts_label_agreement_recall_loss_and_probability_difference():
    true = [0, 0, 0, 0, 1, 1, 2, 2, 2, 2]
    fp32 = one_hot([0, 0, 0, 1, 1, 1, 2, 2, 2, 0])
    int8 = one_hot([0, 0, 1, 1, 1, 0, 2, 2, 2, 2])  # differs on rows 2, 5 and 9
    found = measure(fp32, int8, true, LABELS, "val.parquet", "abc")
    assert found.texts == 10
    assert found.label_agreement == pytest.approx(0.7)
    # a: fp32 3/4 right, int8 2/4; b: 2/2 vs 1/2; c: 3/4 vs 4/4 (int8 gains)
    assert found.recall_drop == pytest.approx({"a": 0.25, "b": 0.5, "c": -0.25})
    assert found.worst_class == ("b", pytest.approx(0.5))
    assert found.max_probability_difference == pytest.approx(0.7)
    assert not found.accepted
    assert "70.0% of labels as fp32 on 10 validation texts" in found.summary()


@pytest.mark.parametrize("same, recall_drop, accepted", [
    (1000, 0.0, True), (995, 0.0, True), (994, 0.0, False),    # 99.5% of labels, no fewer
    (1000, 0.01, True), (1000, 0.0101, False)])                # at most 1 point of recall
def test_int8_is_accepted_only_at_995_per_mille_and_one_recall_point(same, recall_drop,
                                                                     accepted):
    agreement = Agreement("val", "sha", 1000, same / 1000, {"a": recall_drop, "b": -0.02}, 0.01)
    assert agreement.accepted is accepted


def test_agreement_round_trips_through_its_cache_file_and_a_damaged_one_reads_as_none(
        tmp_path):
    agreement = Agreement("val.parquet", "sha", 3, 1.0, {"a": 0.0}, 0.002)
    path = int8_agreement.cache_path(tmp_path / "abc-128-s8.onnx")
    assert path.name == "abc-128-s8.agreement.json"
    agreement.save(path)
    assert Agreement.load(path) == agreement
    path.write_text('{"split": "val"')
    assert Agreement.load(path) is None
    for edited in ({"recall_drop": {}}, {"label_agreement": None}, {"texts": "3"},
                   {"recall_drop": {"a": "0"}}):
        path.write_text(json.dumps({**agreement.__dict__, **edited}))
        assert Agreement.load(path) is None, edited          # measured again, no crash
    assert Agreement.load(tmp_path / "missing.json") is None


def test_large_splits_are_sampled_with_a_fixed_seed():
    assert sample_rows(5).tolist() == [0, 1, 2, 3, 4]
    rows = sample_rows(10_000, limit=2000)
    assert len(rows) == len(set(rows.tolist())) == 2000 and rows.max() < 10_000
    assert (rows == sample_rows(10_000, limit=2000)).all() and (np.diff(rows) > 0).all()


# --- predict and serve: what `auto` does with the measurement ---------------------------

@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """A tiny model folder whose training_info names its validation split, as `textclf
    train` writes it."""
    folder = build_model_folder(tiny_model_dir, tmp_path_factory.mktemp("agreement") / "clf")
    return folder, TrainingInfo.load(folder).validation_split


@pytest.fixture(autouse=True)
def int8_is_faster(tmp_path, monkeypatch):
    """A CPU where int8 measures faster than fp32 (the speed half of `auto`'s choice),
    and an empty int8 cache."""
    monkeypatch.setattr(labeller, "choose_labelling_precision", lambda measure: "int8")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_auto_measures_once_caches_and_takes_int8_where_it_agrees(trained, capsys):
    folder, split = trained
    first = labeller.Labeller.load(folder, "auto")
    err = capsys.readouterr().err
    assert first.precision == "int8" and first.int8 is not None
    assert f"int8: measured against fp32: 100.0% of labels as fp32 on 30 validation " \
           f"texts ({split})" in err
    assert "precision auto chose ONNX Runtime with int8 weights" in err
    cached = int8_agreement.cache_path(first.int8.path)
    assert json.loads(cached.read_text())["label_agreement"] == 1.0

    again = labeller.Labeller.load(folder, "auto")
    err = capsys.readouterr().err
    assert again.precision == "int8"
    assert "measured against fp32" not in err  # printed once, when measured


def test_auto_keeps_fp32_where_int8_changes_answers(trained, capsys, monkeypatch):
    folder, _ = trained
    monkeypatch.setattr(int8_agreement, "MIN_LABEL_AGREEMENT", 1.01)  # nothing passes
    chosen = labeller.Labeller.load(folder, "auto")
    err = capsys.readouterr().err
    assert chosen.precision == "fp32" and chosen.int8 is None
    assert "int8: not used: it changes answers (100.0% of validation labels" in err
    assert "labelling with PyTorch fp32" in err
    forced = labeller.Labeller.load(folder, "int8")  # asked by name: no gate
    assert forced.precision == "int8" and forced.int8 is not None


def test_auto_keeps_fp32_where_the_validation_split_is_missing_or_changed(
        trained, tmp_path, capsys):
    folder, split = trained
    moved = tmp_path / "clf"
    info = TrainingInfo.load(folder)
    for path, reason in [(tmp_path / "gone.parquet", "is not here"),
                         (tmp_path / "changed.parquet", "sha256 differs")]:
        if reason == "sha256 differs":
            write_split(toy_reviews(per_class=2), path)
        shutil.copytree(folder, moved, dirs_exist_ok=True)
        TrainingInfo(**{**info.__dict__, "validation_split": str(path),
                        "data_sha256": {str(path): "0" * 64}}).save(moved)
        chosen = labeller.Labeller.load(moved, "auto")
        err = capsys.readouterr().err
        assert chosen.precision == "fp32" and chosen.int8 is None, reason
        assert reason in err and "int8: not used" in err and "--precision int8 forces it" in err
    # nothing was built that auto could not use unmeasured
    assert not list((tmp_path / "cache").rglob("*.onnx"))
    assert labeller.Labeller.load(moved, "int8").precision == "int8"


def test_auto_labels_with_fp32_where_the_int8_cache_cannot_be_written(
        trained, tmp_path, capsys, monkeypatch):
    """A read-only file system (a container's root): auto answers with fp32 and says why;
    --precision int8 fails in one line."""
    folder, _ = trained
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")                     # the cache would have to be made inside it
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))

    chosen = labeller.Labeller.load(folder, "auto")

    assert chosen.precision == "fp32" and chosen.int8 is None
    err = capsys.readouterr().err
    assert err.startswith("int8: ") and err.rstrip().endswith("; using PyTorch fp32"), err
    with pytest.raises(UserError):
        labeller.Labeller.load(folder, "int8")
