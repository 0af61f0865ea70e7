"""params.yaml is loaded into frozen, typed objects; a bad value names its key."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import yaml

from conftest import REPO
from textclf.params import ParamsError, load_params, params_from_dict

REPO_PARAMS = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))


def with_value(key: str, value) -> dict:
    """A copy of the repository's params with `key` (dotted) set to `value`."""
    raw = copy.deepcopy(REPO_PARAMS)
    *parents, last = key.split(".")
    section = raw
    for name in parents:
        section = section[name]
    section[last] = value
    return raw


def without(key: str) -> dict:
    raw = copy.deepcopy(REPO_PARAMS)
    section, name = key.split(".")
    del raw[section][name]
    return raw


def error_for(raw) -> str:
    with pytest.raises(ParamsError) as err:
        params_from_dict(raw, source="params.yaml")
    return str(err.value)


def test_repository_params_load_into_frozen_typed_objects():
    params = load_params(REPO / "params.yaml")

    assert params.data.labels == REPO_PARAMS["data"]["labels"]
    assert params.data.path == REPO_PARAMS["data"]["path"]
    assert params.train.batch_size == REPO_PARAMS["train"]["batch_size"]
    assert isinstance(params.train.lr, float) and params.train.lr == REPO_PARAMS["train"]["lr"]
    assert params.evaluate.batch_size == REPO_PARAMS["evaluate"]["batch_size"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.train.batch_size = 1


@pytest.mark.parametrize("raw, key", [
    ({**REPO_PARAMS, "trian": {}}, "trian"),
    (with_value("train.batchsize", 16), "train.batchsize"),
    (with_value("data.class_ratios", [1, 1, 1, 1, 1]), "data.class_ratios"),
    (with_value("evaluate.precison", "fp32"), "evaluate.precison"),
])
def test_unknown_key_is_named(raw, key):
    message = error_for(raw)

    assert f"unknown key {key}" in message
    assert message.startswith("params.yaml:")


def test_unknown_key_message_lists_the_known_keys_of_its_section():
    message = error_for(with_value("train.batchsize", 16))

    assert "batch_size" in message.split("known keys in train:")[1]


@pytest.mark.parametrize("key, value, found", [
    ("train.batch_size", "16", "'16' (str)"),
    ("train.epochs", True, "True (bool)"),
    ("train.batch_size", 16.0, "16.0 (float)"),
    ("train.lr", "0.001", "'0.001' (str)"),
    ("train.lr", False, "False (bool)"),
    ("data.labels", "very negative,negative", "(str)"),
    ("data.class_ratio", "2,1,1,1,1", "(str)"),
    ("data.val_size", None, "null"),
    ("data.path", 5, "5 (int)"),
    ("train.precision", "fp64", "'fp64'"),
    ("evaluate.precision", 16, "16 (int)"),
])
def test_wrong_type_names_key_and_what_was_found(key, value, found):
    message = error_for(with_value(key, value))

    assert f"{key} must be" in message
    assert found in message


def test_wrong_type_inside_a_list_names_the_list_and_shows_it():
    message = error_for(with_value("data.class_ratio", [1, 1, "x", 1, 1]))

    assert "data.class_ratio must be a list of a number or null" in message
    assert "[1, 1, 'x', 1, 1]" in message


def test_a_section_that_is_not_a_mapping_is_named():
    assert "train must be a mapping" in error_for(with_value("train", 5))
    assert "top level must be a mapping" in error_for([1, 2])


@pytest.mark.parametrize("key, value", [
    ("train.batch_size", 0),
    ("train.batch_size", -8),
    ("train.epochs", 0),
    ("evaluate.batch_size", 0),
    ("data.test_size", 1),
    ("data.test_size", 1.5),
    ("data.test_size", 0),
    ("data.val_size", -0.1),
    ("train.lr", -1e-4),
    ("train.lr", 0),
    ("train.lr", float("nan")),
    ("train.warmup_ratio", 1.0),
    ("train.weight_decay", -0.01),
    ("train.max_grad_norm", 0),
    ("model.max_length", 4),
    ("model.name", "  "),
])
def test_impossible_value_names_key(key, value):
    message = error_for(with_value(key, value))

    assert f"{key} must be" in message
    assert repr(value) in message


def test_val_and_test_fractions_must_leave_room_for_training():
    raw = with_value("data.val_size", 0.5)
    raw["data"]["test_size"] = 0.5

    message = error_for(raw)

    assert "data.test_size must be val_size + test_size below 1" in message


@pytest.mark.parametrize("ratio", [[1, 1], [2, 1, 1, 1, 1, 1]])
def test_class_ratio_needs_one_number_per_label(ratio):
    message = error_for(with_value("data.class_ratio", ratio))

    assert "data.class_ratio must be one number per label (5 labels" in message


@pytest.mark.parametrize("ratio", [[2, 0, 1, 1, 1], [2, -1, 1, 1, 1], [1, float("inf"), 1, 1, 1]])
def test_class_ratio_entries_must_be_positive_and_finite(ratio):
    message = error_for(with_value("data.class_ratio", ratio))

    assert "data.class_ratio must be null or a list of positive numbers" in message


def test_class_ratio_length_is_only_checked_against_explicit_labels():
    raw = with_value("data.labels", None)
    raw["data"]["class_ratio"] = [1, 2, 3]

    assert params_from_dict(raw).data.class_ratio == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("labels", [["pos", "neg", "pos"], [1, "1"], ["only"]])
def test_labels_must_be_distinct_and_at_least_two(labels):
    raw = with_value("data.labels", labels)
    raw["data"]["class_ratio"] = None

    assert "data.labels must be null or a list of at least 2 distinct labels" in error_for(raw)


def test_labels_may_be_integers():
    raw = with_value("data.labels", [0, 1, 2, 3, 4])

    assert params_from_dict(raw).data.labels == [0, 1, 2, 3, 4]


def test_ints_are_accepted_for_floats_and_become_floats():
    raw = with_value("data.class_ratio", [2, 1, 1, 1, 1])
    raw["train"]["max_grad_norm"] = 2
    raw["train"]["weight_decay"] = 0

    params = params_from_dict(raw)

    assert params.data.class_ratio == [2.0, 1.0, 1.0, 1.0, 1.0]
    assert all(type(r) is float for r in params.data.class_ratio)
    assert type(params.train.max_grad_norm) is float and params.train.max_grad_norm == 2.0
    assert type(params.train.weight_decay) is float


def test_defaults_fill_keys_that_are_left_out():
    params = params_from_dict(without("train.warmup_ratio"))

    assert params.train.warmup_ratio == 0.1


@pytest.mark.parametrize("key", ["data.path", "model.name"])
def test_missing_required_key_is_named(key):
    assert f"missing key {key}" in error_for(without(key))


def test_missing_section_is_named():
    raw = copy.deepcopy(REPO_PARAMS)
    del raw["model"]

    assert "missing key model" in error_for(raw)


def test_load_params_reads_exponent_without_a_dot_as_a_number(tmp_path):
    # PyYAML alone reads `1e-4` as the string '1e-4' (YAML 1.1 wants `1.0e-4`).
    text = (REPO / "params.yaml").read_text(encoding="utf-8")
    lr_line = next(line for line in text.splitlines() if line.strip().startswith("lr:"))
    path = tmp_path / "params.yaml"
    path.write_text(text.replace(lr_line, "  lr: 1e-4"), encoding="utf-8")

    assert load_params(path).train.lr == pytest.approx(1e-4)


def test_load_params_still_treats_quoted_numbers_as_strings(tmp_path):
    text = (REPO / "params.yaml").read_text(encoding="utf-8")
    path = tmp_path / "params.yaml"
    path.write_text(text.replace("batch_size: 32", 'batch_size: "32"'), encoding="utf-8")

    with pytest.raises(ParamsError, match=r"train\.batch_size must be an integer, found '32'"):
        load_params(path)


def test_load_params_names_a_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"

    with pytest.raises(ParamsError, match="nope.yaml: file not found"):
        load_params(path)


def test_load_params_names_invalid_yaml(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("data: [unclosed\n", encoding="utf-8")

    with pytest.raises(ParamsError, match="params.yaml: not valid YAML"):
        load_params(path)


def test_load_params_rejects_an_empty_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("", encoding="utf-8")

    with pytest.raises(ParamsError, match="top level must be a mapping, found null"):
        load_params(path)
