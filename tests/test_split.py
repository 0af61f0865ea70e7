"""Stratified splitting (prepare) and down-sampling to a class ratio (resample)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import LABELS, REPO, toy_reviews
from textclf import prepare, resample
from textclf.data.dataset import DataError, read_labels, read_split, write_labels, write_split
from textclf.params import ParamsError
from textclf.prepare import split_dataset
from textclf.resample import ratio_targets, resample_by_ratio

UNBALANCED = {"very negative": 41, "negative": 97, "neutral": 23, "positive": 66,
              "very positive": 12}


def examples_with(counts: dict[str, int]) -> pd.DataFrame:
    """Unique texts, labels interleaved so that file order is not label order."""
    labels = [label for label, n in counts.items() for _ in range(n)]
    order = np.random.default_rng(0).permutation(len(labels))
    return pd.DataFrame({"text": [f"text {i:04d}" for i in range(len(labels))],
                         "label": [labels[i] for i in order]})


def write_params(folder: Path, **data) -> Path:
    params = copy.deepcopy(yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8")))
    params["data"].update(data)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return path


# split_dataset

@pytest.fixture(scope="module")
def examples() -> pd.DataFrame:
    return examples_with(UNBALANCED)


def test_split_puts_every_class_in_every_split(examples):
    splits = split_dataset(examples, LABELS, val_size=0.15, test_size=0.2, seed=1)

    for name, split in splits.items():
        assert set(split["label"]) == set(LABELS), name


def test_split_sizes_per_class_follow_the_fractions(examples):
    splits = split_dataset(examples, LABELS, val_size=0.15, test_size=0.2, seed=1)

    for label, n in UNBALANCED.items():
        counts = {name: int((split["label"] == label).sum()) for name, split in splits.items()}
        assert counts["test"] == max(1, round(n * 0.2))
        assert counts["val"] == max(1, round(n * 0.15))
        assert sum(counts.values()) == n


def test_split_is_a_partition_of_the_rows(examples):
    splits = split_dataset(examples, LABELS, val_size=0.15, test_size=0.2, seed=1)
    texts = {name: set(split["text"]) for name, split in splits.items()}

    assert sum(len(split) for split in splits.values()) == len(examples)
    assert not texts["train"] & texts["val"]
    assert not texts["train"] & texts["test"]
    assert not texts["val"] & texts["test"]
    assert texts["train"] | texts["val"] | texts["test"] == set(examples["text"])
    for split in splits.values():
        rows = examples.set_index("text").loc[split["text"], "label"]
        assert rows.tolist() == split["label"].tolist()  # each text keeps its label


def test_split_keeps_file_order_inside_each_split(examples):
    position = {text: i for i, text in enumerate(examples["text"])}

    for split in split_dataset(examples, LABELS, 0.15, 0.2, seed=1).values():
        rows = [position[t] for t in split["text"]]
        assert rows == sorted(rows)
        assert split.index.tolist() == list(range(len(split)))


def test_split_same_seed_gives_identical_splits(examples):
    first = split_dataset(examples, LABELS, 0.15, 0.2, seed=7)
    second = split_dataset(examples, LABELS, 0.15, 0.2, seed=7)

    for name in first:
        pd.testing.assert_frame_equal(first[name], second[name])


def test_split_different_seed_gives_different_splits(examples):
    first = split_dataset(examples, LABELS, 0.15, 0.2, seed=7)
    second = split_dataset(examples, LABELS, 0.15, 0.2, seed=8)

    assert set(first["test"]["text"]) != set(second["test"]["text"])
    assert len(first["test"]) == len(second["test"])


def test_split_smallest_possible_class_gets_one_example_per_split():
    examples = examples_with({"a": 30, "b": 3})

    splits = split_dataset(examples, ["a", "b"], 0.15, 0.2, seed=0)

    assert [int((s["label"] == "b").sum()) for s in splits.values()] == [1, 1, 1]


def test_split_class_too_small_is_named():
    examples = examples_with({"common": 30, "rare": 2})

    with pytest.raises(DataError) as err:
        split_dataset(examples, ["common", "rare"], 0.15, 0.2, seed=0, source="reviews.csv")

    message = str(err.value)
    assert message.startswith("reviews.csv: class 'rare' has 2 example(s)")
    assert "expected at least 3" in message


def test_split_declared_label_without_examples_is_named():
    examples = examples_with({"a": 10, "b": 10})

    with pytest.raises(DataError, match="class 'c' has 0 example"):
        split_dataset(examples, ["a", "b", "c"], 0.15, 0.2, seed=0)


# prepare.main: the stage's outputs appear whole or not at all

def run_prepare(data: str = "reviews.csv"):
    return prepare.main(["--params", "params.yaml", "--data", data, "--out-dir", "out/prepared",
                         "--stats", "out/metrics/prepare.json"])


def test_prepare_writes_splits_labels_and_stats(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    reviews = toy_reviews(per_class=12)
    reviews = pd.concat([reviews, reviews.iloc[:2]])  # two exact duplicates
    reviews.to_csv(tmp_path / "reviews.csv", index=False)
    write_params(tmp_path, path="reviews.csv")

    run_prepare()

    out = tmp_path / "out" / "prepared"
    assert sorted(p.name for p in out.iterdir()) == [
        "labels.json", "test.parquet", "train.parquet", "val.parquet"]
    assert read_labels(out / "labels.json") == LABELS
    splits = {name: read_split(out / f"{name}.parquet") for name in prepare.SPLITS}
    assert sum(len(s) for s in splits.values()) == 60
    for split in splits.values():
        assert set(split["label"]) == set(LABELS)
    stats = json.loads((tmp_path / "out" / "metrics" / "prepare.json").read_text())
    assert stats["rows_read"] == 62 and stats["duplicates_dropped"] == 2
    assert stats["rows"] == 60 and stats["num_labels"] == 5
    assert stats["split_sizes"] == {name: len(s) for name, s in splits.items()}
    assert stats["class_counts"]["test"] == {label: 2 for label in LABELS}
    assert "prepare: 60 examples, 5 labels" in capsys.readouterr().out
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_prepare_bad_file_exits_2_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.csv").write_text("text,label\nfine,positive\ngood,positive\n ,negative\n",
                                      encoding="utf-8")
    write_params(tmp_path, path="bad.csv")

    with pytest.raises(SystemExit) as exit_info:
        run_prepare("bad.csv")

    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: bad.csv: column 'text', 1 bad row(s) (row 3)")
    assert len(err.strip().splitlines()) == 1  # one clear line, no traceback
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "params.yaml"]


def test_prepare_bad_params_exit_2_naming_the_key(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    toy_reviews(per_class=6).to_csv(tmp_path / "reviews.csv", index=False)
    write_params(tmp_path, path="reviews.csv", test_size=1.5)

    with pytest.raises(SystemExit) as exit_info:
        run_prepare()

    assert exit_info.value.code == 2
    assert "data.test_size must be" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_prepare_failure_keeps_the_previous_outputs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    toy_reviews(per_class=6).to_csv(tmp_path / "reviews.csv", index=False)
    write_params(tmp_path, path="reviews.csv")
    run_prepare()
    out = tmp_path / "out"
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    # A class now too small to split: the stage fails after reading the data.
    rows = toy_reviews(per_class=6)
    rows = rows[(rows["label"] != "neutral") | (rows.index % 6 < 2)]
    rows.to_csv(tmp_path / "reviews.csv", index=False)
    with pytest.raises(SystemExit):
        run_prepare()

    assert "class 'neutral' has 2 example(s)" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


# resample: ratio_targets and resample_by_ratio

def assert_follows_ratio(targets: dict[str, int], counts: dict[str, int], ratio: list[float]):
    """Within one example of ratio * k for the largest k the counts allow."""
    scale = min(counts[label] / r for label, r in zip(counts, ratio))
    for (label, target), r in zip(targets.items(), ratio):
        assert 0 <= target <= counts[label], label
        assert abs(target - r * scale) <= 1, (label, target, r * scale)
    # The limiting class keeps all its examples: nothing is thrown away needlessly.
    assert any(targets[label] == counts[label] == pytest.approx(r * scale)
               for label, r in zip(counts, ratio))


@pytest.mark.parametrize("ratio", [[2, 1, 1, 1, 1], [1, 1, 1, 1, 1], [3, 1, 2, 1, 1],
                                   [1, 1.5, 0.5, 2, 0.25]])
def test_ratio_targets_hold_the_ratio_within_one_example(ratio):
    targets = ratio_targets(UNBALANCED, ratio)

    assert list(targets) == list(UNBALANCED)
    assert_follows_ratio(targets, UNBALANCED, ratio)


def test_ratio_targets_on_many_random_counts():
    rng = np.random.default_rng(0)
    for _ in range(300):
        counts = dict(zip(LABELS, map(int, rng.integers(1, 500, size=5))))
        ratio = [float(r) for r in rng.choice([0.5, 1, 1.5, 2, 3, 7], size=5)]
        assert_follows_ratio(ratio_targets(counts, ratio), counts, ratio)


def test_ratio_targets_known_values():
    assert ratio_targets({"a": 10, "b": 100, "c": 7}, [2, 1, 1]) == {"a": 10, "b": 5, "c": 5}
    assert ratio_targets({"a": 9, "b": 9}, [1, 1]) == {"a": 9, "b": 9}
    assert ratio_targets({"a": 30, "b": 20, "c": 10}, [3, 2, 1]) == {"a": 30, "b": 20, "c": 10}


@pytest.fixture(scope="module")
def train() -> pd.DataFrame:
    return examples_with(UNBALANCED)


@pytest.mark.parametrize("ratio", [[2, 1, 1, 1, 1], [1, 1, 1, 1, 1], [3, 1, 2, 1, 1]])
def test_resample_by_ratio_keeps_a_subset_at_the_ratio(train, ratio):
    resampled = resample_by_ratio(train, LABELS, ratio, seed=3)

    counts = resampled["label"].value_counts()
    after = {label: int(counts.get(label, 0)) for label in LABELS}
    assert after == ratio_targets(UNBALANCED, ratio)
    assert_follows_ratio(after, UNBALANCED, ratio)
    assert resampled["text"].is_unique
    original = train.set_index("text")["label"]
    assert original.loc[resampled["text"]].tolist() == resampled["label"].tolist()
    position = {text: i for i, text in enumerate(train["text"])}
    rows = [position[t] for t in resampled["text"]]
    assert rows == sorted(rows)  # file order kept


def test_resample_by_ratio_is_deterministic_per_seed(train):
    ratio = [1, 1, 1, 1, 1]
    first = resample_by_ratio(train, LABELS, ratio, seed=3)

    pd.testing.assert_frame_equal(first, resample_by_ratio(train, LABELS, ratio, seed=3))
    assert set(first["text"]) != set(resample_by_ratio(train, LABELS, ratio, seed=4)["text"])


def test_resample_by_ratio_none_returns_the_input_unchanged(train):
    assert resample_by_ratio(train, LABELS, None, seed=3) is train


def test_resample_by_ratio_wrong_length_names_class_ratio(train):
    with pytest.raises(ParamsError) as err:
        resample_by_ratio(train, LABELS, [2, 1, 1], seed=3)

    message = str(err.value)
    assert message.startswith("data.class_ratio has 3 numbers")
    assert str(LABELS) in message


def test_resample_by_ratio_refuses_to_drop_a_class(train):
    # very positive has 12 examples; at 1:10 the others' share of it rounds to zero.
    with pytest.raises(ParamsError, match="data.class_ratio .* leaves class 'very negative'"):
        resample_by_ratio(train, LABELS, [1, 1, 1, 1, 20], seed=3)


# resample.main: only the training split changes

@pytest.fixture
def prepared(tmp_path) -> Path:
    folder = tmp_path / "prepared"
    folder.mkdir()
    splits = split_dataset(examples_with(UNBALANCED), LABELS, 0.15, 0.2, seed=0)
    for name, split in splits.items():
        write_split(split, folder / f"{name}.parquet")
    write_labels(LABELS, folder / "labels.json")
    return folder


def run_resample(tmp_path: Path, prepared: Path):
    return resample.main(["--params", str(tmp_path / "params.yaml"),
                          "--train", str(prepared / "train.parquet"),
                          "--labels", str(prepared / "labels.json"),
                          "--out-dir", str(tmp_path / "resampled"),
                          "--counts", str(tmp_path / "counts.json")])


def test_resample_main_writes_only_train_and_counts(tmp_path, prepared):
    write_params(tmp_path, path="unused.csv", class_ratio=[2, 1, 1, 1, 1])
    inputs = {p.name: p.read_bytes() for p in prepared.iterdir()}

    run_resample(tmp_path, prepared)

    assert [p.name for p in (tmp_path / "resampled").iterdir()] == ["train.parquet"]
    assert {p.name: p.read_bytes() for p in prepared.iterdir()} == inputs  # val/test untouched
    counts = json.loads((tmp_path / "counts.json").read_text())
    train = read_split(prepared / "train.parquet")
    before = {label: int((train["label"] == label).sum()) for label in LABELS}
    assert counts["train_before"] == before
    assert counts["train_after"] == ratio_targets(before, [2, 1, 1, 1, 1])
    resampled = read_split(tmp_path / "resampled" / "train.parquet")
    assert counts["train_rows"] == len(resampled) == sum(counts["train_after"].values())


def test_resample_main_without_a_ratio_copies_train(tmp_path, prepared):
    write_params(tmp_path, path="unused.csv", class_ratio=None)

    run_resample(tmp_path, prepared)

    out = tmp_path / "resampled" / "train.parquet"
    assert out.read_bytes() == (prepared / "train.parquet").read_bytes()
    counts = json.loads((tmp_path / "counts.json").read_text())
    assert counts["train_before"] == counts["train_after"]


def test_resample_main_ratio_of_wrong_length_exits_2_and_writes_nothing(tmp_path, prepared,
                                                                         capsys):
    # Without data.labels, params cannot check the length; resample does.
    write_params(tmp_path, path="unused.csv", labels=None, class_ratio=[2, 1, 1])

    with pytest.raises(SystemExit) as exit_info:
        run_resample(tmp_path, prepared)

    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: data.class_ratio has 3 numbers")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml", "prepared"]
