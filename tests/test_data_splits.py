"""Official splits: a folder of train (and optionally validation and test) files."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import LABELS, REPO, SST5, run, toy_reviews
from textclf import prepare, resample
from textclf.data.dataset import DataError, read_labels, read_split
from textclf.prepare import find_split_files

OUT = ("out/prepared", "out/prepare.json")


def write_params(folder: Path, **data) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["data"].update(data)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False),
                                        encoding="utf-8")


def run_prepare(folder: Path, data: str) -> dict:
    prepare.main(["--params", str(folder / "params.yaml"), "--data", data,
                  "--out-dir", str(folder / OUT[0]), "--stats", str(folder / OUT[1])])
    return json.loads((folder / OUT[1]).read_text(encoding="utf-8"))


def prepared(folder: Path) -> dict[str, pd.DataFrame]:
    return {name: read_split(folder / OUT[0] / f"{name}.parquet") for name in prepare.SPLITS}


def official_splits(folder: Path, files: dict[str, int], prefix: str = "") -> Path:
    """A folder with one file per split: toy reviews, distinct texts in each file."""
    folder.mkdir(exist_ok=True)
    for number, (name, per_class) in enumerate(files.items()):
        frame = toy_reviews(per_class=per_class)
        frame["text"] = f"{prefix}{name}: " + frame["text"]
        frame = frame.sample(frac=1, random_state=number).reset_index(drop=True)
        path = folder / name
        if path.suffix == ".jsonl":
            frame.to_json(path, orient="records", lines=True)
        elif path.suffix == ".parquet":
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False, sep="\t" if path.suffix == ".tsv" else ",")
    return folder


# find_split_files

def test_a_file_is_the_train_file(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("text,label\na,b\n", encoding="utf-8")

    assert find_split_files(path) == {"train": path}


@pytest.mark.parametrize("names, expected", [
    (["train.csv", "dev.csv", "README.md"], {"train": "train.csv", "val": "dev.csv"}),
    (["train.jsonl", "validation.parquet", "test.tsv"],
     {"train": "train.jsonl", "val": "validation.parquet", "test": "test.tsv"}),
    (["Train.CSV", "val.csv"], {"train": "Train.CSV", "val": "val.csv"}),
    (["train.csv", "test.csv", "notes.txt", "train.txt"],
     {"train": "train.csv", "test": "test.csv"}),
    (["train.csv"], {"train": "train.csv"}),
])
def test_a_folder_maps_file_names_to_splits(tmp_path, names, expected):
    for name in names:
        (tmp_path / name).write_text("text,label\n", encoding="utf-8")

    found = find_split_files(tmp_path)

    assert {split: path.name for split, path in found.items()} == expected


@pytest.mark.parametrize("names, split", [(["train.csv", "dev.csv", "validation.csv"], "val"),
                                          (["train.csv", "train.jsonl"], "train")])
def test_two_files_for_one_split_are_refused(tmp_path, names, split):
    for name in names:
        (tmp_path / name).write_text("text,label\n", encoding="utf-8")

    with pytest.raises(DataError, match=f"2 files for the {split} split .*; expected one"):
        find_split_files(tmp_path)


def test_a_folder_without_a_train_file_lists_what_it_holds(tmp_path):
    for name in ("dev.csv", "notes.txt"):
        (tmp_path / name).write_text("x", encoding="utf-8")

    with pytest.raises(DataError) as err:
        find_split_files(tmp_path)

    message = str(err.value)
    assert message.startswith(f"{tmp_path}: a folder without a training file")
    assert "train.<ext>" in message and "found dev.csv, notes.txt" in message


# prepare with given splits

def test_all_three_given_are_used_as_they_are(tmp_path):
    folder = official_splits(tmp_path / "splits", {"train.csv": 10, "validation.jsonl": 3,
                                                   "test.parquet": 2})
    write_params(tmp_path, val_size=0.5, test_size=0.4)  # ignored: nothing is cut

    stats = run_prepare(tmp_path, str(folder))

    splits = prepared(tmp_path)
    for name, file in (("train", "train.csv"), ("val", "validation.jsonl"),
                       ("test", "test.parquet")):
        source = pd.read_parquet(folder / file) if file.endswith("parquet") else (
            pd.read_json(folder / file, lines=True) if file.endswith("jsonl")
            else pd.read_csv(folder / file))
        assert splits[name]["text"].tolist() == source["text"].tolist(), name
        assert splits[name]["label"].tolist() == source["label"].tolist(), name
    assert stats["split_sizes"] == {"train": 50, "val": 15, "test": 10}
    assert stats["files"] == {"train": str(folder / "train.csv"),
                              "val": str(folder / "validation.jsonl"),
                              "test": str(folder / "test.parquet")}
    assert read_labels(tmp_path / OUT[0] / "labels.json") == LABELS


def test_given_validation_stays_whole_and_test_is_cut_from_train(tmp_path, capsys):
    folder = official_splits(tmp_path / "splits", {"train.csv": 20, "dev.csv": 4})
    write_params(tmp_path, test_size=0.2)

    stats = run_prepare(tmp_path, str(folder))

    splits = prepared(tmp_path)
    assert splits["val"]["text"].tolist() == pd.read_csv(folder / "dev.csv")["text"].tolist()
    assert stats["class_counts"]["test"] == {label: 4 for label in LABELS}  # 20 * 0.2
    assert stats["class_counts"]["train"] == {label: 16 for label in LABELS}
    train_file = set(pd.read_csv(folder / "train.csv")["text"])
    assert set(splits["train"]["text"]) | set(splits["test"]["text"]) == train_file
    assert not set(splits["train"]["text"]) & set(splits["test"]["text"])
    assert "cut from train: test" in capsys.readouterr().out


def test_given_test_stays_whole_and_validation_is_cut_from_train(tmp_path):
    folder = official_splits(tmp_path / "splits", {"train.tsv": 20, "test.tsv": 3})
    write_params(tmp_path, val_size=0.1)

    stats = run_prepare(tmp_path, str(folder))

    splits = prepared(tmp_path)
    assert len(splits["test"]) == 15
    assert stats["class_counts"]["val"] == {label: 2 for label in LABELS}
    assert stats["split_sizes"]["train"] == 90


def test_a_text_in_two_given_files_names_both_files_and_rows(tmp_path, capsys):
    folder = official_splits(tmp_path / "splits", {"train.csv": 6, "dev.csv": 2})
    dev = pd.read_csv(folder / "dev.csv")
    train = pd.read_csv(folder / "train.csv")
    # The same text, respelled with extra spaces, in train row 5 and dev row 3.
    dev.loc[2] = ["  " + train.loc[4, "text"].replace(" ", "  "), train.loc[4, "label"]]
    dev.to_csv(folder / "dev.csv", index=False)
    write_params(tmp_path)

    with pytest.raises(SystemExit):
        run_prepare(tmp_path, str(folder))

    err = capsys.readouterr().err
    assert f"is in two splits: train ({folder / 'train.csv'}, row 5) and val " \
           f"({folder / 'dev.csv'}, row 3)" in err
    assert "data.overlap: drop_from_train" in err
    assert not (tmp_path / "out").exists()


def test_overlap_drop_from_train_keeps_the_given_split_whole(tmp_path):
    folder = official_splits(tmp_path / "splits", {"train.csv": 10, "dev.csv": 2})
    dev = pd.read_csv(folder / "dev.csv")
    train = pd.read_csv(folder / "train.csv")
    dev = pd.concat([dev, train.iloc[[0, 7]]], ignore_index=True)
    dev.to_csv(folder / "dev.csv", index=False)
    write_params(tmp_path, overlap="drop_from_train")

    stats = run_prepare(tmp_path, str(folder))

    splits = prepared(tmp_path)
    assert stats["overlap_dropped_from_train"] == 2
    assert splits["val"]["text"].tolist() == dev["text"].tolist()
    assert not set(train["text"].iloc[[0, 7]]) & set(splits["train"]["text"])
    assert not set(train["text"].iloc[[0, 7]]) & set(splits["test"]["text"])
    assert sum(stats["split_sizes"].values()) == 50 + 10 + 2 - 2


def test_overlap_drop_from_train_without_given_splits_cuts_them_as_usual(tmp_path):
    # params-sst5.yaml sets drop_from_train; pointed at one file, nothing is held out.
    folder = official_splits(tmp_path / "splits", {"train.csv": 10})
    write_params(tmp_path)
    expected = run_prepare(tmp_path, str(folder / "train.csv"))
    write_params(tmp_path, overlap="drop_from_train")

    stats = run_prepare(tmp_path, str(folder / "train.csv"))

    assert stats["overlap_dropped_from_train"] == 0
    assert stats["split_sizes"] == expected["split_sizes"]


def test_labels_that_differ_only_in_case_are_two_classes_with_a_warning(tmp_path, capsys):
    folder = official_splits(tmp_path / "splits", {"train.csv": 10})
    train = pd.read_csv(folder / "train.csv")
    train.loc[train["label"] == "positive", "label"] = ["Positive"] * 5 + ["positive"] * 5
    train.to_csv(folder / "train.csv", index=False)
    write_params(tmp_path, labels=None, class_ratio=None)

    stats = run_prepare(tmp_path, str(folder / "train.csv"))

    assert stats["num_labels"] == 6
    assert ("prepare: warning: the labels 'Positive' and 'positive' differ only in case and "
            "are 2 classes; if they are one, respell them in the data") in capsys.readouterr().err


def test_overlap_between_given_val_and_test_is_refused_even_when_dropping(tmp_path, capsys):
    folder = official_splits(tmp_path / "splits", {"train.csv": 6, "dev.csv": 2,
                                                   "test.csv": 2})
    test = pd.read_csv(folder / "test.csv")
    pd.concat([test, pd.read_csv(folder / "dev.csv").iloc[[1]]]).to_csv(folder / "test.csv",
                                                                         index=False)
    write_params(tmp_path, overlap="drop_from_train")

    with pytest.raises(SystemExit):
        run_prepare(tmp_path, str(folder))

    err = capsys.readouterr().err
    assert "is in two splits: val" in err and f"test ({folder / 'test.csv'}, row 11)" in err
    assert "drop_from_train" not in err.split("is in two splits")[1]


def test_a_label_in_validation_that_train_lacks_is_named(tmp_path, capsys):
    folder = official_splits(tmp_path / "splits", {"train.csv": 4, "dev.csv": 2})
    dev = pd.read_csv(folder / "dev.csv")
    dev.loc[3, "label"] = "sarcastic"
    dev.to_csv(folder / "dev.csv", index=False)
    write_params(tmp_path, labels=None, class_ratio=None)

    with pytest.raises(SystemExit):
        run_prepare(tmp_path, str(folder))

    err = capsys.readouterr().err
    assert err.startswith(f"error: {folder / 'dev.csv'}: row 4 with a label the training "
                          f"file {folder / 'train.csv'} does not have")
    assert "found row 4: 'sarcastic'" in err


def test_a_label_outside_data_labels_in_a_given_file_names_that_file(tmp_path, capsys):
    folder = official_splits(tmp_path / "splits", {"train.csv": 4, "test.csv": 2})
    test = pd.read_csv(folder / "test.csv")
    test.loc[0, "label"] = "meh"
    test.to_csv(folder / "test.csv", index=False)
    write_params(tmp_path)

    with pytest.raises(SystemExit):
        run_prepare(tmp_path, str(folder))

    assert capsys.readouterr().err.startswith(
        f"error: {folder / 'test.csv'}: column 'label', 1 bad row(s) (row 1)")


def test_class_ratio_resamples_train_only_with_given_splits(tmp_path):
    folder = official_splits(tmp_path / "splits", {"train.csv": 12, "dev.csv": 3})
    write_params(tmp_path, class_ratio=[2, 1, 1, 1, 1])
    run_prepare(tmp_path, str(folder))
    before = {p.name: p.read_bytes() for p in (tmp_path / OUT[0]).iterdir()}

    resample.main(["--params", str(tmp_path / "params.yaml"),
                   "--train", str(tmp_path / OUT[0] / "train.parquet"),
                   "--labels", str(tmp_path / OUT[0] / "labels.json"),
                   "--out-dir", str(tmp_path / "resampled"),
                   "--counts", str(tmp_path / "counts.json")])

    assert {p.name: p.read_bytes() for p in (tmp_path / OUT[0]).iterdir()} == before
    counts = json.loads((tmp_path / "counts.json").read_text())["train_after"]
    assert counts["very negative"] == 2 * counts["negative"]
    assert len(prepared(tmp_path)["val"]) == 15


def test_the_single_file_case_is_unchanged_by_the_folder_case(tmp_path):
    # One file, or a folder holding only train.<ext>: the same three-way split.
    folder = official_splits(tmp_path / "splits", {"train.csv": 8})
    write_params(tmp_path)
    from_folder = run_prepare(tmp_path, str(folder))
    splits_folder = prepared(tmp_path)

    from_file = run_prepare(tmp_path, str(folder / "train.csv"))

    assert from_file["split_sizes"] == from_folder["split_sizes"]
    for name, split in prepared(tmp_path).items():
        pd.testing.assert_frame_equal(split, splits_folder[name])


# dvc.yaml: DVC tracks every split file that prepare reads

@pytest.mark.slow
def test_dvc_repro_tracks_each_official_split_file(project):
    folder = official_splits(project / "data" / "sst", {"train.csv": 8, "dev.csv": 2})
    params = yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))
    params["data"]["path"] = "data/sst"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    out = run(["dvc", "repro", "prepare"], project).stdout
    assert "cut from train: test" in out
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["prepare"]
    assert {"data/sst", "src/textclf/prepare.py"} <= {d["path"] for d in lock["deps"]}
    assert lock["cmd"].startswith('textclf prepare --data "data/sst"')
    assert "Data and pipelines are up to date" in run(["dvc", "status", "prepare"], project).stdout

    dev = pd.read_csv(folder / "dev.csv")
    dev.iloc[:-1].to_csv(folder / "dev.csv", index=False)  # the validation file changes
    assert "modified:" in run(["dvc", "status", "prepare"], project).stdout
    run(["dvc", "repro", "prepare"], project)
    assert len(read_split(project / "data" / "prepared" / "val.parquet")) == len(dev) - 1


def test_prepare_reads_the_path_dvc_yaml_passes_not_data_path(tmp_path):
    folder = official_splits(tmp_path / "splits", {"train.csv": 6})
    write_params(tmp_path, path="nowhere/absent.csv")

    stats = run_prepare(tmp_path, str(folder / "train.csv"))

    assert stats["files"]["train"] == str(folder / "train.csv")
    assert sum(stats["split_sizes"].values()) == 30


def test_dvc_yaml_passes_data_path_to_prepare_and_tracks_it():
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]["prepare"]

    assert '--data "${data.path}"' in stage["cmd"]
    assert "${data.path}" in stage["deps"]
    assert "data.path" in stage["params"] and "data.overlap" in stage["params"]


@pytest.mark.sst5
@pytest.mark.skipif(not (SST5 / "dev.csv").is_file(), reason=f"SST-5 not found at {SST5}")
def test_sst5_official_train_and_dev(tmp_path, capsys):
    write_params(tmp_path, labels=None, class_ratio=None)
    with pytest.raises(SystemExit):
        run_prepare(tmp_path, str(SST5))
    assert "'Hey Arnold !' is in two splits: train" in capsys.readouterr().err

    write_params(tmp_path, labels=None, class_ratio=None, overlap="drop_from_train")
    stats = run_prepare(tmp_path, str(SST5))

    assert stats["files"] == {"train": str(SST5 / "train.csv"), "val": str(SST5 / "dev.csv"),
                              "test": None}
    assert stats["overlap_dropped_from_train"] == 1
    assert stats["split_sizes"]["val"] == 1100  # 1,101 rows, one exact duplicate
    assert stats["class_counts"]["val"] == {"0": 139, "1": 289, "2": 228, "3": 279, "4": 165}
    assert stats["split_sizes"]["train"] + stats["split_sizes"]["test"] == 8544 - 10 - 1
