"""Reading a user's file and checking it: every error names file, row (or line) and column."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from textclf.canonical import normalize_label
from textclf.data.chunks import open_table, read_chunks
from textclf.data.dataset import (DataError, clean_examples, label_order, read_labels, read_split,
                                  read_table, write_labels, write_split)

COLUMNS = ["text", "label"]
ROWS = [{"text": "a fine film", "label": 3}, {"text": "dull, slow", "label": 1},
        {"text": 'said "wow"', "label": 5}]


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def write_file(path: Path, rows: list[dict]) -> Path:
    """Write `rows` in the format the extension names (labels stay ints where it can)."""
    frame = pd.DataFrame(rows)
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif suffix in (".jsonl", ".ndjson"):
        write_jsonl(path, rows)
    else:
        frame.to_parquet(path, index=False)
    return path


def read_clean(path: Path, labels=None, text_column="text", label_column="label"):
    frame = read_table(path, [text_column, label_column])
    return clean_examples(frame, text_column, label_column, labels, source=str(path))


def data_error(call, *args, **kwargs) -> str:
    with pytest.raises(DataError) as err:
        call(*args, **kwargs)
    return str(err.value)


# read_table

@pytest.mark.parametrize("name", ["data.csv", "data.tsv", "data.jsonl", "data.ndjson",
                                  "data.parquet", "data.pq"])
def test_read_table_reads_each_format_by_extension(tmp_path, name):
    path = write_file(tmp_path / name, ROWS)

    frame = read_table(path, COLUMNS)

    assert frame["text"].tolist() == [r["text"] for r in ROWS]
    assert [normalize_label(v) for v in frame["label"]] == ["3", "1", "5"]
    assert frame.index.tolist() == [0, 1, 2]


def test_read_table_extension_is_case_insensitive(tmp_path):
    path = write_file(tmp_path / "data.csv", ROWS).rename(tmp_path / "DATA.CSV")

    assert len(read_table(path, COLUMNS)) == 3


def test_read_table_keeps_csv_text_verbatim(tmp_path):
    # "NA", "null" and "" are texts, not missing values; digits stay strings.
    path = tmp_path / "data.csv"
    path.write_text("text,label\nNA,1\nnull,2\n007,3\n", encoding="utf-8")

    frame = read_table(path, COLUMNS)

    assert frame["text"].tolist() == ["NA", "null", "007"]
    assert frame["label"].tolist() == ["1", "2", "3"]


def test_a_plain_tsv_keeps_its_quotes_and_a_quoted_tsv_is_unquoted(tmp_path):
    # A plain TSV (GLUE, SST-5): quotes are characters, and a stray one must not merge
    # rows. A TSV a CSV writer made (pandas, spreadsheets): quoted fields are unquoted.
    plain = tmp_path / "plain.tsv"
    plain.write_text('text\tlabel\n"Great" movie\ta\n"Loved it\tb\nx\ta\nmeh" he said\tb\n'
                     'a 12" screen\ta\n', encoding="utf-8")
    written = tmp_path / "written.tsv"
    pd.DataFrame({"text": ['"Best" movie', "two\nlines", "a\ttab"], "label": ["a", "b", "a"]}
                 ).to_csv(written, sep="\t", index=False)

    assert read_table(plain, COLUMNS)["text"].tolist() == [
        '"Great" movie', '"Loved it', "x", 'meh" he said', 'a 12" screen']
    assert read_table(written, COLUMNS)["text"].tolist() == ['"Best" movie', "two\nlines", "a\ttab"]
    long = tmp_path / "long.tsv"        # a field over csv's 131,072-character default limit
    pd.DataFrame({"text": ['He said "hi"\tthere', "y" * 131_073], "label": ["a", "b"]}
                 ).to_csv(long, sep="\t", index=False)
    assert read_table(long, COLUMNS)["text"].tolist() == ['He said "hi"\tthere', "y" * 131_073]
    for path, texts in ((plain, 5), (written, 3)):
        chunks = list(read_chunks(open_table(path, COLUMNS), 2))
        assert pd.concat(chunks)["text"].tolist() == read_table(path, COLUMNS)["text"].tolist()
        assert sum(map(len, chunks)) == texts


def test_read_table_strips_a_utf8_bom(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(b"\xef\xbb\xbftext,label\nok,1\n")

    assert read_table(path, COLUMNS).columns.tolist() == ["text", "label"]


@pytest.mark.parametrize("name", ["data.xlsx", "data.txt", "data"])
def test_read_table_rejects_unsupported_extension(tmp_path, name):
    path = tmp_path / name
    path.write_text("text,label\nok,1\n", encoding="utf-8")

    message = data_error(read_table, path, COLUMNS)

    assert str(path) in message and "unsupported file type" in message
    assert ".csv" in message and ".jsonl" in message and ".parquet" in message


def test_read_table_names_a_missing_file(tmp_path):
    path = tmp_path / "absent.csv"

    assert data_error(read_table, path, COLUMNS) == f"{path}: file not found"


@pytest.mark.parametrize("name", ["data.csv", "data.jsonl", "data.parquet"])
def test_read_table_names_the_missing_column_and_lists_found_ones(tmp_path, name):
    path = write_file(tmp_path / name, [{"review": "ok", "label": 1}])

    message = data_error(read_table, path, COLUMNS)

    assert str(path) in message
    assert "no column 'text'" in message
    assert "found columns: review, label" in message


@pytest.mark.parametrize("name, content", [
    ("data.csv", "text,label,label\nok,1,2\n"),
    ("data.tsv", "text\tlabel\tlabel\nok\t1\t2\n"),
])
def test_a_column_named_twice_in_the_header_is_refused(tmp_path, name, content):
    """pandas reads the second as `label.1`, so the first was used without a word."""
    path = tmp_path / name
    path.write_text(content)
    expected = f"{path}: column 'label' appears twice in the header; expected each column once"
    assert data_error(read_table, path, COLUMNS) == expected
    assert data_error(open_table, path, COLUMNS) == expected        # predict's streaming read


def test_read_table_names_file_and_line_of_undecodable_bytes(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"text,label\nok,1\n\xff\xfe bad,2\n")

    message = data_error(read_table, path, COLUMNS)

    assert message.startswith(f"{path}, line 3:")
    assert "0xff" in message and "offset 16" in message and "UTF-8" in message


def test_read_table_undecodable_bytes_after_a_bom_point_into_the_file(tmp_path):
    path = tmp_path / "bom.csv"
    data = b"\xef\xbb\xbftext,label\nok,1\n\xe9t\xe9,2\n"
    path.write_bytes(data)

    message = data_error(read_table, path, COLUMNS)

    assert message.startswith(f"{path}, line 3:")
    offset = data.index(b"\xe9")
    assert f"byte 0xe9 at offset {offset} is not valid UTF-8" in message


def test_read_table_names_the_line_of_malformed_json(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "ok", "label": 1}\n{"text": "broken", "label": \n',
                    encoding="utf-8")

    message = data_error(read_table, path, COLUMNS)

    assert message.startswith(f"{path}, line 2: not valid JSON")


def test_read_table_requires_json_objects(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "ok", "label": 1}\n["not", "an", "object"]\n', encoding="utf-8")

    assert data_error(read_table, path, COLUMNS) == (
        f"{path}, line 2: expected a JSON object, found list")


def test_read_table_jsonl_allows_blank_lines_and_crlf(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_bytes(b'{"text": "a", "label": 1}\r\n\r\n{"text": "b", "label": 2}\r\n')

    assert read_table(path, COLUMNS)["text"].tolist() == ["a", "b"]


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85"])
def test_read_table_jsonl_keeps_unicode_line_separators_inside_text(tmp_path, separator):
    # JSON allows these unescaped in strings; they do not end a JSON Lines record.
    path = tmp_path / "data.jsonl"
    text = f"first{separator}second"
    path.write_text(json.dumps({"text": text, "label": 1}, ensure_ascii=False) + "\n",
                    encoding="utf-8")

    assert read_table(path, COLUMNS)["text"].tolist() == [text]


@pytest.mark.parametrize("name, content, expected", [
    ("empty.csv", "", "the file is empty"),
    ("empty.jsonl", "\n\n", "the file has no records"),
    ("ragged.csv", "text,label\nok,1\ntoo,many,fields\n", "cannot parse as CSV"),
])
def test_read_table_names_unreadable_text_files(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")

    assert data_error(read_table, path, COLUMNS).startswith(f"{path}: {expected}")


def test_read_table_names_a_damaged_parquet_file(tmp_path):
    path = tmp_path / "data.parquet"
    path.write_bytes(b"not parquet at all")

    assert data_error(read_table, path, COLUMNS).startswith(f"{path}: cannot read as Parquet")


# labels

@pytest.mark.parametrize("value", [3, 3.0, "3", " 3 ", np.int64(3), np.float64(3.0)])
def test_normalize_label_treats_numbers_and_their_text_alike(value):
    assert normalize_label(value) == "3"


@pytest.mark.parametrize("value", [None, float("nan"), np.nan, "", "   "])
def test_normalize_label_maps_missing_to_none(value):
    assert normalize_label(value) is None


def test_normalize_label_keeps_fractions_and_words():
    assert normalize_label(2.5) == "2.5"
    assert normalize_label(" very positive ") == "very positive"


def test_int_labels_in_jsonl_and_parquet_equal_string_labels_in_csv(tmp_path):
    results = [read_clean(write_file(tmp_path / name, ROWS), labels=[1, 3, 5])
               for name in ("data.csv", "data.jsonl", "data.parquet")]

    for examples, stats in results:
        pd.testing.assert_frame_equal(examples, results[0][0])
        assert examples["label"].tolist() == ["3", "1", "5"]
        assert stats == {"rows_read": 3, "duplicates_dropped": 0}


def test_float_labels_from_parquet_with_a_gap_match_integer_labels(tmp_path):
    # A nullable int column comes back as floats (3.0); 3.0 is label "3".
    path = tmp_path / "data.parquet"
    pd.DataFrame({"text": ["a", "b"], "label": [3.0, 1.0]}).to_parquet(path)

    examples, _ = read_clean(path, labels=["1", "3"])

    assert examples["label"].tolist() == ["3", "1"]


def test_float32_labels_from_parquet_are_the_decimals_a_csv_spells(tmp_path):
    path = tmp_path / "data.parquet"
    pd.DataFrame({"text": ["a", "b", "c", "d"],
                  "label": np.array([0.1, 0.2, 0.3, np.nan], dtype=np.float32)}).to_parquet(path)
    csv = write_file(tmp_path / "data.csv", [{"text": "a", "label": "0.1"}])

    labels = [normalize_label(v) for v in read_table(path, COLUMNS)["label"]]

    assert labels == ["0.1", "0.2", "0.3", None]
    assert normalize_label(read_table(csv, COLUMNS)["label"][0]) == "0.1"


# clean_examples: every bad row is named by file, 1-based row and column

def frame_of(*rows) -> pd.DataFrame:
    return pd.DataFrame([{"text": t, "label": l} for t, l in rows])


def clean(frame, labels=None, source="reviews.csv"):
    return clean_examples(frame, "text", "label", labels, source=source)


@pytest.mark.parametrize("bad_text", ["", "   ", "\t\n", None, float("nan")])
def test_empty_or_missing_text_names_file_row_and_column(bad_text):
    frame = frame_of(("good", "pos"), (bad_text, "neg"), ("fine", "pos"))

    message = data_error(clean, frame)

    assert message.startswith("reviews.csv: column 'text', 1 bad row(s) (row 2)")
    assert message.endswith(": expected text, found none (empty or missing, or blank once "
                            "spaces and invisible characters are removed)")


def test_missing_text_in_jsonl_names_its_line(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", [
        {"text": "ok", "label": 1}, {"text": "fine", "label": 2},
        {"text": None, "label": 1}, {"label": 2}])

    message = data_error(read_clean, path)

    assert message.startswith(f"{path}: column 'text', 2 bad row(s) (rows 3, 4)")


def test_text_that_is_not_a_string_is_named(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl",
                       [{"text": "ok", "label": 1}, {"text": 42, "label": 2}])

    message = data_error(read_clean, path)

    assert message.startswith(f"{path}: column 'text', 1 bad row(s) (row 2)")
    assert "expected text (a string); found row 2: '42'" in message


@pytest.mark.parametrize("bad_label", ["", "  ", None, float("nan")])
def test_missing_label_names_file_row_and_column(bad_label):
    frame = frame_of(("good", "pos"), ("bad", "neg"), ("meh", bad_label))

    message = data_error(clean, frame)

    assert message.startswith("reviews.csv: column 'label', 1 bad row(s) (row 3)")
    assert message.endswith(": expected a label, found none (empty or missing)")


def test_missing_label_in_csv_names_the_row(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("text,label\nok,pos\nno label here,\n", encoding="utf-8")

    assert data_error(read_clean, path).startswith(f"{path}: column 'label', 1 bad row(s) (row 2)")


def test_label_outside_the_declared_labels_is_named_with_its_value():
    frame = frame_of(("good", "pos"), ("bad", "neg"), ("great", "amazing"), ("ok", "neutral"))

    message = data_error(clean, frame, labels=["neg", "pos"])

    assert message.startswith("reviews.csv: column 'label', 2 bad row(s) (rows 3, 4)")
    assert "expected a label in data.labels ['neg', 'pos']" in message
    assert "row 3: 'amazing'" in message and "row 4: 'neutral'" in message


def test_custom_column_names_appear_in_the_message(tmp_path):
    path = write_file(tmp_path / "data.csv", [{"review": "ok", "stars": 1},
                                              {"review": " ", "stars": 2}])

    message = data_error(read_clean, path, text_column="review", label_column="stars")

    assert message.startswith(f"{path}: column 'review', 1 bad row(s) (row 2)")


def test_many_bad_rows_are_summarised():
    frame = frame_of(*[("", "pos")] * 8)

    message = data_error(clean, frame)

    assert "8 bad row(s) (rows 1, 2, 3, 4, 5 and 3 more)" in message


def test_exact_duplicates_are_dropped_and_counted():
    frame = frame_of(("good", "pos"), ("bad", "neg"), ("good", "pos"), ("meh", "neg"),
                     ("good", "pos"), ("bad", "neg"))

    examples, stats = clean(frame)

    assert examples["text"].tolist() == ["good", "bad", "meh"]
    assert examples["label"].tolist() == ["pos", "neg", "neg"]
    assert examples.index.tolist() == [0, 1, 2]
    assert stats == {"rows_read": 6, "duplicates_dropped": 3}


def test_duplicates_with_equal_labels_in_different_spellings_are_one_example():
    frame = pd.DataFrame({"text": ["same", "same", "other"], "label": [3, "3", 4.0]})

    examples, stats = clean(frame)

    assert examples[["text", "label"]].to_dict("records") == [{"text": "same", "label": "3"},
                                                              {"text": "other", "label": "4"}]
    assert stats["duplicates_dropped"] == 1


def test_contradictory_duplicates_name_both_rows_and_labels():
    frame = frame_of(("fine", "pos"), ("good", "pos"), ("bad", "neg"), ("good", "neg"))

    message = data_error(clean, frame)

    assert message.startswith("reviews.csv: contradictory duplicates")
    assert "'good'" in message
    assert "rows 2, 4 ('pos', 'neg')" in message


# label_order

def test_label_order_keeps_an_explicit_order():
    assert label_order({"a", "b", "c"}, ["c", "a", "b"]) == ["c", "a", "b"]
    assert label_order({"1", "2", "10"}, [10, 1, 2]) == ["10", "1", "2"]


def test_label_order_sorts_integer_labels_numerically():
    assert label_order({"10", "2", "1", "-3", "0"}, None) == ["-3", "0", "1", "2", "10"]


def test_label_order_sorts_text_labels_alphabetically():
    assert label_order({"positive", "negative", "neutral"}, None) == [
        "negative", "neutral", "positive"]


def test_label_order_sorts_mixed_labels_as_text():
    assert label_order({"10", "9", "x"}, None) == ["10", "9", "x"]


@pytest.mark.parametrize("odd", ["--3", "-", "\u00b2"])
def test_label_order_with_digit_like_labels_sorts_as_text(odd):
    # "--3".lstrip("-") and "²" look like digits to str.isdigit but int() rejects them.
    assert label_order({odd, "1"}, None) == sorted({odd, "1"})


# files exchanged between stages

def test_split_and_labels_files_round_trip(tmp_path):
    examples = frame_of(("a", "1"), ("b", "2"))
    examples["extra"] = 0

    write_split(examples, tmp_path / "train.parquet")
    write_labels(["2", "1"], tmp_path / "labels.json")

    pd.testing.assert_frame_equal(read_split(tmp_path / "train.parquet"),
                                  examples[["text", "label"]])
    assert read_labels(tmp_path / "labels.json") == ["2", "1"]
