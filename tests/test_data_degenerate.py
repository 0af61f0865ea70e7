"""Degenerate data and unreadable paths: each is one clear error naming the file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import REPO
from textclf import prepare
from textclf.data.dataset import DataError, clean_examples, read_table
from textclf.errors import UserError

COLUMNS = ["text", "label"]


def data_error(path: Path) -> str:
    with pytest.raises(DataError) as err:
        read_table(path, COLUMNS)
    assert isinstance(err.value, UserError)
    return str(err.value)


def run_prepare(tmp_path: Path, data: Path, capsys, **data_params) -> str:
    """Run the stage on `data`; return its one-line error (exit 2, nothing written)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["data"].update(path=str(data), **data_params)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        prepare.main(["--params", str(tmp_path / "params.yaml"), "--data", str(data),
                      "--out-dir", str(tmp_path / "out" / "prepared"),
                      "--stats", str(tmp_path / "out" / "prepare.json")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert not (tmp_path / "out").exists()
    return err.splitlines()[0]


# files without rows

@pytest.mark.parametrize("name, content", [
    ("header.csv", "text,label\n"),
    ("header_crlf.csv", "text,label\r\n"),
    ("header_no_newline.csv", "text,label"),
    ("header.tsv", "text\tlabel\n"),
    ("header_bom.csv", "\ufefftext,label\n"),
])
def test_header_only_file_says_it_has_no_rows(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")

    message = data_error(path)

    assert message.startswith(f"{path}: no rows")
    assert "text, label" in message


@pytest.mark.parametrize("name, content, expected", [
    ("empty.csv", "", "the file is empty"),
    ("blank.csv", "\n\n\n", "the file is empty"),
    ("empty.tsv", "", "the file is empty"),
    ("empty.jsonl", "", "the file has no records"),
    ("blank.jsonl", " \n\n \n", "the file has no records"),
    ("empty.parquet", "", "cannot read as Parquet"),
])
def test_empty_file_is_named(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")

    assert data_error(path).startswith(f"{path}: {expected}")


@pytest.mark.parametrize("label_type", [pa.string(), pa.int64(), pa.float64()])
def test_zero_row_parquet_says_it_has_no_rows(tmp_path, label_type):
    path = tmp_path / "data.parquet"
    schema = pa.schema([("text", pa.string()), ("label", label_type)])
    pq.write_table(schema.empty_table(), path)

    assert data_error(path).startswith(f"{path}: no rows")


def test_zero_row_parquet_written_by_pandas_says_it_has_no_rows(tmp_path):
    path = tmp_path / "data.parquet"
    pd.DataFrame({"text": pd.Series([], dtype="str"),
                  "label": pd.Series([], dtype="Int64")}).to_parquet(path)

    assert data_error(path).startswith(f"{path}: no rows")


def test_header_only_file_stops_prepare_with_one_line(tmp_path, capsys):
    path = tmp_path / "reviews.csv"
    path.write_text("text,label\n", encoding="utf-8")

    assert run_prepare(tmp_path, path, capsys).startswith(f"error: {path}: no rows")


# classes

def test_one_class_only_is_named(tmp_path, capsys):
    path = tmp_path / "reviews.csv"
    pd.DataFrame({"text": [f"t{i}" for i in range(10)], "label": ["pos"] * 10}).to_csv(
        path, index=False)

    line = run_prepare(tmp_path, path, capsys, labels=None)

    assert line == (f"error: {path}: column 'label' has one class only ('pos'); "
                    f"expected at least 2 classes to tell apart")


def test_one_class_in_several_spellings_is_still_one_class(tmp_path, capsys):
    path = tmp_path / "reviews.csv"
    path.write_text("text,label\na,1\nb,1.0\nc, 1\nd,01\n", encoding="utf-8")

    assert "has one class only ('1')" in run_prepare(tmp_path, path, capsys, labels=None)


@pytest.mark.parametrize("count", [1, 2])
def test_class_too_small_for_the_split_is_named(tmp_path, capsys, count):
    path = tmp_path / "reviews.csv"
    rows = [("common", i) for i in range(20)] + [("rare", i) for i in range(count)]
    pd.DataFrame({"text": [f"{lab} {i}" for lab, i in rows],
                  "label": [lab for lab, _ in rows]}).to_csv(path, index=False)

    line = run_prepare(tmp_path, path, capsys, labels=None)

    assert line.startswith(f"error: {path}: class 'rare' has {count} example(s); "
                           f"expected at least 3 so that train, test, validation each get one")


def test_class_too_small_when_only_test_is_cut(tmp_path, capsys):
    folder = tmp_path / "splits"
    folder.mkdir()
    pd.DataFrame({"text": ["a", "b", "c", "d"], "label": ["x", "x", "x", "y"]}).to_csv(
        folder / "train.csv", index=False)
    pd.DataFrame({"text": ["e", "f"], "label": ["x", "y"]}).to_csv(folder / "dev.csv",
                                                                   index=False)

    line = run_prepare(tmp_path, folder, capsys, labels=None)

    assert line.startswith(f"error: {folder / 'train.csv'}: class 'y' has 1 example(s); "
                           f"expected at least 2 so that train, test each get one")


def test_declared_class_missing_from_given_train_file_is_named(tmp_path, capsys):
    folder = tmp_path / "splits"
    folder.mkdir()
    for name in ("train", "validation", "test"):
        pd.DataFrame({"text": [f"{name} {i}" for i in range(4)],
                      "label": ["a", "b"] * 2}).to_csv(folder / f"{name}.csv", index=False)

    line = run_prepare(tmp_path, folder, capsys, labels=["a", "b", "c"], class_ratio=None)

    assert line == (f"error: {folder / 'train.csv'}: class 'c' has 0 example(s); "
                    f"expected at least 1 in the training file")


# paths that are not readable files (issue: "not file not found")

def test_folder_is_named_as_a_folder(tmp_path):
    folder = tmp_path / "data.csv"
    folder.mkdir()

    assert data_error(folder).startswith(f"{folder}: a folder; expected a data file")


def test_broken_symlink_is_named_with_its_target(tmp_path):
    link = tmp_path / "data.csv"
    link.symlink_to(tmp_path / "gone.csv")

    message = data_error(link)

    assert message.startswith(f"{link}: a broken symbolic link")
    assert "gone.csv" in message and "not found" not in message


@pytest.mark.parametrize("hops", [1, 2])
def test_symlink_loop_is_named(tmp_path, hops):
    links = [tmp_path / f"link{i}.csv" for i in range(hops)]
    for i, link in enumerate(links):
        link.symlink_to(links[(i + 1) % hops])

    assert data_error(links[0]).startswith(f"{links[0]}: a symbolic link loop")


def test_missing_file_is_still_file_not_found(tmp_path):
    path = tmp_path / "absent.csv"

    assert data_error(path) == f"{path}: file not found"


def test_a_fifo_is_not_read(tmp_path):
    path = tmp_path / "data.csv"
    os.mkfifo(path)

    assert data_error(path).startswith(f"{path}: not a regular file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files without read permission")
def test_unreadable_file_says_permission_denied(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("text,label\na,1\n", encoding="utf-8")
    path.chmod(0o200)

    assert data_error(path) == f"{path}: permission denied; expected a file you can read"


def test_permission_check_names_the_file(tmp_path, monkeypatch):
    # The same check as above, where the test cannot drop root's read access.
    path = tmp_path / "data.csv"
    path.write_text("text,label\na,1\n", encoding="utf-8")
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)

    assert data_error(path) == f"{path}: permission denied; expected a file you can read"


def test_symlink_to_a_good_file_is_read(tmp_path):
    target = tmp_path / "real.csv"
    target.write_text("text,label\na,1\nb,2\n", encoding="utf-8")
    link = tmp_path / "link.csv"
    link.symlink_to(target)

    assert read_table(link, COLUMNS)["text"].tolist() == ["a", "b"]


@pytest.mark.parametrize("make", ["broken", "loop", "folder"])
def test_prepare_names_the_path_problem_in_one_line(tmp_path, capsys, make):
    path = tmp_path / "reviews.csv"
    if make == "broken":
        path.symlink_to(tmp_path / "gone.csv")
    elif make == "loop":
        path.symlink_to(path)
    else:
        path.mkdir()
        (path / "notes.txt").write_text("hi", encoding="utf-8")

    line = run_prepare(tmp_path, path, capsys)

    expected = {"broken": "a broken symbolic link", "loop": "a symbolic link loop",
                "folder": "a folder without a training file"}[make]
    assert line.startswith(f"error: {path}: {expected}")


# labels pandas hands over in unusual types

def test_a_gap_in_a_nullable_integer_label_column_is_a_missing_label(tmp_path):
    path = tmp_path / "data.parquet"
    pd.DataFrame({"text": ["a", "b", "c"],
                  "label": pd.array([1, None, 2], dtype="Int64")}).to_parquet(path)
    frame = read_table(path, COLUMNS)

    with pytest.raises(DataError, match=r"column 'label', 1 bad row\(s\) \(row 2\): "
                                        r"expected a label, found none \(empty or missing\)"):
        clean_examples(frame, "text", "label", None, source=str(path))


@pytest.mark.parametrize("label", [["pos"], {"name": "pos"}])
def test_a_label_that_is_a_list_or_an_object_is_named(tmp_path, label):
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [{"text": "a", "label": "pos"},
                                                      {"text": "b", "label": label}]) + "\n",
                    encoding="utf-8")
    frame = read_table(path, COLUMNS)

    with pytest.raises(DataError, match=r"column 'label', 1 bad row\(s\) \(row 2\): expected a "
                                        r"label \(a string or a number\)"):
        clean_examples(frame, "text", "label", None, source=str(path))
