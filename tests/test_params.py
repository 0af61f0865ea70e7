"""params.yaml is loaded into frozen, typed objects; a bad value names its key."""

from __future__ import annotations

import copy
import dataclasses
import json

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


@pytest.mark.parametrize("ratio", [[2, 0, 1, 1, 1], [2, -1, 1, 1, 1]])
def test_class_ratio_entries_must_be_positive(ratio):
    message = error_for(with_value("data.class_ratio", ratio))

    assert "data.class_ratio must be null or a list of positive numbers" in message


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), float("-inf")])
def test_class_ratio_entries_must_be_finite(bad):
    message = error_for(with_value("data.class_ratio", [1, bad, 1, 1, 1]))

    assert "data.class_ratio must be finite numbers" in message
    assert repr(bad) in message


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

    with pytest.raises(ParamsError, match=r"params.yaml, line 2, column 1: not valid YAML"):
        load_params(path)


def test_load_params_rejects_an_empty_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("", encoding="utf-8")

    with pytest.raises(ParamsError, match="top level must be a mapping, found null"):
        load_params(path)


# YAML: read as DVC reads it (1.2); refuse what YAML 1.1 tools would read otherwise

def load_with(tmp_path, old: str, new: str):
    """load_params on the repository's params.yaml with one line's text replaced."""
    text = (REPO / "params.yaml").read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "params.yaml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return load_params(path)


def load_error(tmp_path, old: str, new: str) -> str:
    with pytest.raises(ParamsError) as err:
        load_with(tmp_path, old, new)
    return str(err.value)


@pytest.mark.parametrize("old, new, key", [
    ("seed: 42", "seed: 0755", "data.seed"),
    ("epochs: 6", "epochs: 010", "train.epochs"),
    ("lr: 0.0001", "lr: 1:30", "train.lr"),
    ("freeze_embeddings: false", "freeze_embeddings: no", "train.freeze_embeddings"),
    ("freeze_embeddings: false", "freeze_embeddings: off", "train.freeze_embeddings"),
    ("resume: true", "resume: yes", "train.resume"),
    ("resume: true", "resume: On", "train.resume"),
    ("- neutral", "- yes", "data.labels[2]"),
    ("text_column: text", "text_column: 12:30", "data.text_column"),
])
def test_values_yaml_1_1_reads_otherwise_are_refused_naming_the_key(tmp_path, old, new, key):
    message = load_error(tmp_path, old, new)

    assert message.startswith(f"{tmp_path / 'params.yaml'}: {key} is ambiguous")
    assert "DVC (YAML 1.2) reads" in message and "YAML 1.1 tools read" in message


def test_a_key_yaml_1_1_reads_as_a_boolean_is_refused(tmp_path):
    message = load_error(tmp_path, "evaluate:", "on: 1\nevaluate:")

    assert "on (the key itself) is ambiguous" in message


@pytest.mark.parametrize("old, new, attribute, value", [
    ("lr: 0.0001", "lr: 1e-4", ("train", "lr"), 1e-4),        # a number for DVC, a str in 1.1
    ("lr: 0.0001", "lr: 5E-5", ("train", "lr"), 5e-5),
    ("seed: 42", "seed: 0o17", ("data", "seed"), 15),          # YAML 1.2 octal; a str in 1.1
    ("seed: 42", 'seed: "42"', None, None),                    # quoted: a string, refused as such
    ("- neutral", '- "yes"', ("data", "labels"), None),
])
def test_values_both_yaml_versions_agree_on_or_fail_loudly(tmp_path, old, new, attribute, value):
    if attribute is None:
        assert "data.seed must be an integer, found '42' (str)" in load_error(tmp_path, old, new)
        return
    params = load_with(tmp_path, old, new)
    section, name = attribute
    read = getattr(getattr(params, section), name)
    if value is None:
        assert "yes" in read
    else:
        assert read == pytest.approx(value) and type(read) is type(value)


@pytest.mark.parametrize("key, line", [
    ("train.lr", "lr: 0.0001"), ("train.weight_decay", "weight_decay: 0.01"),
    ("train.max_grad_norm", "max_grad_norm: 1.0"), ("train.warmup_ratio", "warmup_ratio: 0.1"),
    ("data.val_size", "val_size: 0.15"), ("data.test_size", "test_size: 0.2"),
])
@pytest.mark.parametrize("special", [".nan", ".inf", "-.inf", ".NaN", "+.inf"])
def test_non_finite_floats_are_refused_naming_the_key(tmp_path, key, line, special):
    name = line.split(":")[0]

    message = load_error(tmp_path, line, f"{name}: {special}")

    assert f"{key} must be a finite number, found" in message


@pytest.mark.parametrize("special", [".nan", ".inf", "-.inf"])
def test_non_finite_class_ratio_is_refused(tmp_path, special):
    message = load_error(tmp_path, "class_ratio: null", f"class_ratio: [1, 1, {special}, 1, 1]")

    assert "data.class_ratio must be finite numbers, found" in message


def test_duplicate_keys_are_refused_as_dvc_refuses_them(tmp_path):
    message = load_error(tmp_path, "  epochs: 6", "  epochs: 6\n  epochs: 7")

    assert message == (f"{tmp_path / 'params.yaml'}, line 33, column 3: the key 'epochs' is "
                       f"given twice in one section (the section starts on line 31); expected "
                       f"each key once (DVC would refuse the file too)")


def test_invalid_yaml_is_one_line_naming_line_and_column(tmp_path):
    message = load_error(tmp_path, "  epochs: 6", "  epochs: [6")

    assert "\n" not in message
    assert message.startswith(f"{tmp_path / 'params.yaml'}, line ")
    assert "not valid YAML: expected ',' or ']'" in message


# seeds and the new training and model keys

@pytest.mark.parametrize("key", ["data.seed", "train.seed"])
@pytest.mark.parametrize("seed", [-1, 2**32, 2**64])
def test_seeds_out_of_range_are_refused(key, seed):
    message = error_for(with_value(key, seed))

    assert f"{key} must be an integer from 0 to 4294967295, found {seed}" in message


@pytest.mark.parametrize("key", ["data.seed", "train.seed"])
@pytest.mark.parametrize("seed", [0, 2**32 - 1])
def test_seeds_at_the_ends_of_the_range_are_accepted(key, seed):
    section, name = key.split(".")

    assert getattr(getattr(params_from_dict(with_value(key, seed)), section), name) == seed


@pytest.mark.parametrize("key, default", [("train.resume", True), ("train.processes", 1),
                                          ("model.init_from", None), ("model.drop_labels", [])])
def test_new_keys_default_when_left_out_and_repository_sets_the_default(key, default):
    section, name = key.split(".")

    assert getattr(getattr(params_from_dict(without(key)), section), name) == default
    assert getattr(getattr(load_params(REPO / "params.yaml"), section), name) == default


@pytest.mark.parametrize("key, value, expected", [
    ("train.resume", "yes", "train.resume must be true or false"),
    ("train.resume", 1, "train.resume must be true or false"),
    ("train.processes", 0, "train.processes must be a positive integer"),
    ("train.processes", -2, "train.processes must be a positive integer"),
    ("train.processes", True, "train.processes must be an integer"),
    ("train.processes", 2.0, "train.processes must be an integer"),
    ("model.init_from", "", "model.init_from must be null or a model folder"),
    ("model.init_from", "  ", "model.init_from must be null or a model folder"),
    ("model.init_from", 3, "model.init_from must be"),
])
def test_new_keys_refuse_wrong_values(key, value, expected):
    assert expected in error_for(with_value(key, value))


@pytest.mark.parametrize("key, value", [("train.resume", False), ("train.processes", 4),
                                        ("model.init_from", "models/base")])
def test_new_keys_accept_good_values(key, value):
    section, name = key.split(".")

    assert getattr(getattr(params_from_dict(with_value(key, value)), section), name) == value


def dropping(value) -> dict:
    """The repository's params warm-starting from models/v1 with model.drop_labels `value`."""
    raw = with_value("model.init_from", "models/v1")
    raw["model"]["drop_labels"] = value
    return raw


def test_drop_labels_are_spelt_as_the_data_labels_are():
    model = params_from_dict(dropping([4, " neutral ", "very\u00a0 negative"])).model

    assert model.drop_labels == [4, " neutral ", "very\u00a0 negative"]  # as DVC shows them
    assert model.labels_to_drop() == ["4", "neutral", "very negative"]


@pytest.mark.parametrize("value, expected", [
    ("neutral", "model.drop_labels must be a list of a string or an integer, found 'neutral'"),
    (None, "model.drop_labels must be a list of a string or an integer, found null"),
    ([1.5], "model.drop_labels[0] must be a string or an integer, found 1.5 (float)"),
    ([True], "model.drop_labels[0] must be a string or an integer, found True (bool)"),
    (["a", " "], "model.drop_labels must be a list of distinct labels of the model.init_from "
                 "folder; item 1 is blank"),
    (["3", 3.0], "model.drop_labels[1] must be a string or an integer, found 3.0"),
    (["3", "03"], "items 0 and 1 ('3' and '03') are the same label"),
])
def test_drop_labels_refuse_wrong_values(value, expected):
    assert expected in error_for(dropping(value))


def test_drop_labels_without_init_from_name_both_keys():
    raw = with_value("model.drop_labels", ["neutral"])

    assert ("model.drop_labels must be [] while model.init_from is null (labels are dropped "
            "from the model that model.init_from names), found ['neutral']") in error_for(raw)


def test_an_empty_drop_labels_needs_no_init_from():
    assert params_from_dict(with_value("model.drop_labels", [])).model.drop_labels == []


@pytest.mark.parametrize("value", ["error", "drop_from_train"])
def test_overlap_takes_its_two_choices(value):
    assert params_from_dict(with_value("data.overlap", value)).data.overlap == value


def test_overlap_refuses_anything_else():
    assert "data.overlap must be one of ['error', 'drop_from_train']" in error_for(
        with_value("data.overlap", "ignore"))


@pytest.mark.slow
def test_textclf_reads_what_dvc_params_diff_shows(tmp_path):
    from conftest import run

    text = (REPO / "params.yaml").read_text(encoding="utf-8")
    (tmp_path / "params.yaml").write_text(text, encoding="utf-8")
    (tmp_path / "dvc.yaml").write_text("stages:\n  s:\n    cmd: echo\n    params: [train, data]\n")
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "base"]):
        run(cmd, tmp_path)
    changed = (text.replace("lr: 0.0001", "lr: 3e-5").replace("seed: 42", "seed: 0o777", 1)
               .replace("epochs: 6", "epochs: 1_0"))
    (tmp_path / "params.yaml").write_text(changed, encoding="utf-8")

    diff = json.loads(run(["dvc", "params", "diff", "--json"], tmp_path).stdout)["params.yaml"]
    params = load_params(tmp_path / "params.yaml")

    assert diff["train.lr"]["new"] == params.train.lr == 3e-5
    assert diff["data.seed"]["new"] == params.data.seed == 511
    assert diff["train.epochs"]["new"] == params.train.epochs == 10


def test_the_label_column_must_differ_from_the_text_column(tmp_path):
    message = load_error(tmp_path, "label_column: label", "label_column: text")

    assert "data.label_column must be a column other than data.text_column ('text')" in message
