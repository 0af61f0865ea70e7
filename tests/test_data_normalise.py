"""Labels and texts that are equal once normalised are one class, one example, one split."""

from __future__ import annotations

import unicodedata

import pandas as pd
import pytest
import yaml

from conftest import REPO
from textclf.canonical import canonical_text, normalize_label
from textclf.data.dataset import DataError, clean_examples, label_order, read_table
from textclf.params import ParamsError, params_from_dict
from textclf.prepare import check_disjoint, split_dataset

REPO_PARAMS = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
CAFE_NFC = "caf\u00e9"
CAFE_NFD = unicodedata.normalize("NFD", CAFE_NFC)


def clean(frame: pd.DataFrame, labels=None):
    return clean_examples(frame, "text", "label", labels, source="reviews.csv")


# one spelling per label

@pytest.mark.parametrize("spelling", [
    "positive", "positive ", " positive", "positive\t", "positive\u200b", "\ufeffpositive",
    "posi\u00adtive", "positive\u00a0", "positive\x00", "positive\u2060", "\u200epositive",
])
def test_invisible_and_space_variants_are_one_label(spelling):
    assert normalize_label(spelling) == "positive"


@pytest.mark.parametrize("spelling", [CAFE_NFC, CAFE_NFD, "caf\uff45\u0301"])
def test_unicode_forms_of_a_label_are_one_label(spelling):
    # NFC, NFD and a fullwidth letter (an NFKC compatibility form) print alike.
    assert normalize_label(spelling) == CAFE_NFC


@pytest.mark.parametrize("spelling", [1, 1.0, "1", "1.0", "1.00", " 1 ", "01", "+1", "1.",
                                      "\uff11"])
def test_numeric_spellings_of_a_label_are_one_label(spelling):
    assert normalize_label(spelling) == "1"


@pytest.mark.parametrize("value, expected", [
    (2.5, "2.5"), ("2.50", "2.5"), ("-0", "0"), (0.0, "0"), ("1e3", "1000"), (1e-05, "0.00001"),
    ("very  positive", "very positive"), ("1,0", "1,0"), ("nan", "nan"), ("inf", "inf"),
])
def test_other_label_spellings(value, expected):
    assert normalize_label(value) == expected


@pytest.mark.parametrize("value", ["\u200b", "\ufeff ", "\x00", "\u00ad\t"])
def test_a_label_of_invisible_characters_only_is_missing(value):
    assert normalize_label(value) is None


def test_csv_labels_1_and_1_0_are_one_class(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("text,label\na,1\nb,1.0\nc,2\nd,2.00\ne, 1 \n", encoding="utf-8")

    examples, _ = clean(read_table(path, ["text", "label"]))

    assert examples["label"].tolist() == ["1", "1", "2", "2", "1"]
    assert label_order(examples["label"].unique(), None) == ["1", "2"]


def test_label_variants_in_one_file_become_one_class():
    frame = pd.DataFrame({"text": ["a", "b", "c", "d", "e"],
                          "label": ["pos", "pos ", "pos\u200b", "neg", "neg\u00a0"]})

    examples, _ = clean(frame)

    assert sorted(set(examples["label"])) == ["neg", "pos"]


def test_declared_labels_match_data_labels_in_any_spelling():
    frame = pd.DataFrame({"text": ["a", "b"], "label": [CAFE_NFD, "bar"]})

    examples, _ = clean(frame, labels=[CAFE_NFC + " ", "bar\u200b"])

    assert examples["label"].tolist() == [CAFE_NFC, "bar"]
    assert label_order(examples["label"], [CAFE_NFC + " ", "bar\u200b"]) == [CAFE_NFC, "bar"]


# data.labels: a label twice is a params error naming the key

def with_labels(labels) -> dict:
    raw = {section: dict(values) for section, values in REPO_PARAMS.items()}
    raw["data"].update(labels=labels, class_ratio=None)
    return raw


@pytest.mark.parametrize("labels, items", [
    (["pos", "neg", "pos "], "items 0 and 2"),
    (["pos", "pos\u200b"], "items 0 and 1"),
    ([1, "1.0", 2], "items 0 and 1"),
    ([CAFE_NFC, "x", CAFE_NFD], "items 0 and 2"),
    (["a", "b", "01", "1"], "items 2 and 3"),
])
def test_the_same_label_twice_in_data_labels_is_named(labels, items):
    with pytest.raises(ParamsError) as err:
        params_from_dict(with_labels(labels), source="params.yaml")

    message = str(err.value)
    assert message.startswith("params.yaml: data.labels must be")
    assert items in message and "same label once" in message


def test_a_blank_label_in_data_labels_is_named():
    with pytest.raises(ParamsError, match=r"data\.labels must be .* item 1 is blank"):
        params_from_dict(with_labels(["a", "\u200b", "b"]))


# texts: equal once normalised means duplicate

@pytest.mark.parametrize("variant", [
    "a fine film", "a  fine film", " a fine film ", "a\tfine\nfilm", "a fine\u200b film",
    "a fine film\u00a0", "\ufeffa fine film", "a fi\u00adne film",
])
def test_text_variants_share_one_key(variant):
    assert canonical_text(variant) == "a fine film"


def test_canonical_text_keeps_case_and_punctuation():
    assert canonical_text("Great!") != canonical_text("great!")
    assert canonical_text("ok.") != canonical_text("ok")


def test_texts_equal_once_normalised_are_duplicates():
    frame = pd.DataFrame({"text": ["a fine film", "a  fine film ", "a fine\u200bfilm", "dull"],
                          "label": ["pos", "pos", "pos", "neg"]})

    examples, stats = clean(frame)

    # "a fine\u200bfilm" loses its invisible space and becomes "a finefilm": another text.
    assert examples["text"].tolist() == ["a fine film", "a fine\u200bfilm", "dull"]
    assert examples["row"].tolist() == [1, 3, 4]
    assert stats["duplicates_dropped"] == 1


def test_texts_equal_once_normalised_with_two_labels_are_contradictory():
    frame = pd.DataFrame({"text": ["good", "bad", CAFE_NFC, CAFE_NFD + " "],
                          "label": ["pos", "neg", "pos", "neg"]})

    with pytest.raises(DataError) as err:
        clean(frame)

    assert "contradictory duplicates" in str(err.value)
    assert "rows 3, 4 ('pos', 'neg')" in str(err.value)


def test_a_text_of_invisible_characters_only_is_empty():
    frame = pd.DataFrame({"text": ["ok", "\u200b\u200b", "\ufeff "], "label": ["a", "b", "a"]})

    with pytest.raises(DataError, match=r"2 bad row\(s\) \(rows 2, 3\): expected text, found none"):
        clean(frame)


def test_split_never_puts_variants_of_one_text_in_two_splits():
    texts = [f"text {i}" for i in range(60)]
    variants = [t.replace(" ", "  ") + "\u200b" for t in texts]  # the same texts, respelled
    frame = pd.DataFrame({"text": texts + variants, "label": ["a", "b", "c"] * 40})

    examples, stats = clean(frame)
    splits = split_dataset(examples, ["a", "b", "c"], 0.2, 0.2, seed=0)

    assert stats["duplicates_dropped"] == 60
    keys = [set(split["key"]) for split in splits.values()]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])


# "no text in two splits" is a checked invariant

def examples_of(*rows) -> pd.DataFrame:
    return pd.DataFrame([{"text": t, "label": "a", "key": canonical_text(t), "row": r}
                         for t, r in rows])


def test_check_disjoint_passes_disjoint_splits():
    check_disjoint({"train": examples_of(("a", 1), ("b", 2)), "val": examples_of(("c", 3)),
                    "test": examples_of(("d", 4))},
                   {"train": "d.csv", "val": "d.csv", "test": "d.csv"})


@pytest.mark.parametrize("pair", [("train", "val"), ("train", "test"), ("val", "test")])
def test_check_disjoint_names_both_splits_files_and_rows(pair):
    splits = {"train": examples_of(("one", 4), ("two", 5)), "val": examples_of(("three", 2)),
              "test": examples_of(("four", 7))}
    first, second = pair
    splits[first] = pd.concat([splits[first], examples_of(("shared  text", 11))])
    splits[second] = pd.concat([splits[second], examples_of(("shared text\u200b", 9))])
    sources = {"train": "train.csv", "val": "dev.csv", "test": "test.csv"}

    with pytest.raises(DataError) as err:
        check_disjoint(splits, sources)

    message = str(err.value)
    assert message.startswith("the text 'shared text' is in two splits")
    assert f"{first} ({sources[first]}, row 11)" in message
    assert f"{second} ({sources[second]}, row 9)" in message
    assert ("drop_from_train" in message) == (first == "train")
