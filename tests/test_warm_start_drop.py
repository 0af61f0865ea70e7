"""A warm start (`model.init_from`) that drops classes the user lists (`model.drop_labels`):
the label order, the old ids' remap, the head rows removed, the errors, and the model card."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import LABELS, REPO, toy_reviews
from textclf.errors import UserError
from textclf.model.folder import TrainingInfo
from textclf.model.loading import load_pretrained, save_classifier
from textclf.training.warm_start import (LabelChange, label_row_names, plan_labels,
                                         reshaped_state, start_from)

OLD = ["a", "b", "c", "d"]


def test_a_dropped_label_goes_and_the_old_ids_after_it_move_up():
    change = plan_labels(OLD, ["d", "e", "a", "c"], "m", drop=["b"])

    assert change.order == ["a", "c", "d", "e"]
    assert change.remap() == {0: 0, 2: 1, 3: 2}
    assert change.dropped == ["b"] and change.added == ["e"] and change.old == OLD


def test_dropped_labels_are_recorded_in_the_old_order_whatever_order_they_are_listed_in():
    change = plan_labels(OLD, ["c", "x", "b"], "m", drop=["d", "a"])

    assert change.order == ["b", "c", "x"]
    assert change.remap() == {1: 0, 2: 1}
    assert change.dropped == ["a", "d"] and change.added == ["x"]


def test_without_drop_labels_every_old_id_stays():
    change = plan_labels(OLD, OLD + ["e"], "m")

    assert change.remap() == {0: 0, 1: 1, 2: 2, 3: 3} and change.order == OLD + ["e"]
    assert change.dropped == []


def test_a_label_the_model_does_not_know_cannot_be_dropped():
    with pytest.raises(UserError) as err:
        plan_labels(OLD, ["a", "b", "c"], "models/v1", drop=["d", "z"])

    assert str(err.value).startswith("model.drop_labels lists 'z', which the model in "
                                     "models/v1 does not know (its labels: ['a', 'b', 'c', 'd'])")


def test_a_dropped_label_the_data_still_has_is_refused_with_its_count():
    with pytest.raises(UserError) as err:
        plan_labels(OLD, ["a", "b", "c", "d"], "models/v1", drop=["b"],
                    counts={"a": 5, "b": 7, "c": 5, "d": 5})

    message = str(err.value)
    assert "'b' is dropped from the model in models/v1, but the new data has 7 examples" in message
    assert "remove those rows" in message and "take 'b' out of model.drop_labels" in message


def test_an_old_label_the_data_lacks_and_that_is_not_dropped_points_to_drop_labels():
    with pytest.raises(UserError, match="knows label\\(s\\) 'c' that the new data lacks.*"
                                        "list them in model.drop_labels"):
        plan_labels(OLD, ["a", "d"], "m", drop=["b"])


def test_the_kept_rows_are_the_old_rows_and_the_added_row_stays_fresh():
    """Drop b, add e: 4 labels before and after, so no shape tells the head apart."""
    weight = torch.arange(12, dtype=torch.float32).reshape(4, 3)     # (labels, hidden)
    old = {"classifier.weight": weight, "classifier.bias": torch.tensor([10., 11., 12., 13.]),
           "encoder.weight": torch.ones(3, 3)}
    fresh = {"classifier.weight": torch.full((4, 3), -1.0),
             "classifier.bias": torch.full((4,), -1.0), "encoder.weight": torch.zeros(3, 3)}
    change = LabelChange(source="m", old=OLD, order=["a", "c", "d", "e"], dropped=["b"])

    state = reshaped_state(old, fresh, ["classifier.weight", "classifier.bias"], change)

    assert torch.equal(state["classifier.weight"], torch.tensor(
        [[0., 1., 2.], [6., 7., 8.], [9., 10., 11.], [-1., -1., -1.]]))
    assert torch.equal(state["classifier.bias"], torch.tensor([10., 12., 13., -1.]))
    assert torch.equal(state["encoder.weight"], torch.ones(3, 3))
    assert torch.equal(old["classifier.weight"], weight), "the old state is left as it was"


def test_dropping_two_of_four_leaves_two_rows():
    old = {"head.weight": torch.arange(8.).reshape(4, 2), "head.bias": torch.arange(4.)}
    fresh = {"head.weight": torch.zeros(2, 2), "head.bias": torch.zeros(2)}
    change = plan_labels(OLD, ["d", "b"], "m", drop=["a", "c"])

    state = reshaped_state(old, fresh, ["head.weight", "head.bias"], change)

    assert torch.equal(state["head.weight"], torch.tensor([[2., 3.], [6., 7.]]))
    assert torch.equal(state["head.bias"], torch.tensor([1., 3.]))


def test_the_label_rows_of_a_two_label_bert_are_its_head_not_token_type_embeddings(
        tiny_model_dir):
    _, model = load_pretrained(str(tiny_model_dir), ["x", "y"])

    assert model.bert.embeddings.token_type_embeddings.weight.shape[0] == 2
    assert label_row_names(model) == ["classifier.weight", "classifier.bias"]


def test_a_warm_start_removes_the_dropped_rows_of_a_saved_model(tiny_model_dir, tmp_path):
    old_labels = LABELS[:4]
    torch.manual_seed(0)
    tokenizer, old = load_pretrained(str(tiny_model_dir), old_labels)
    save_classifier(old, tokenizer, tmp_path,
                    TrainingInfo(labels=old_labels, max_length=32, base_model="tiny"))
    new_labels = ["very positive", "positive", "negative", "very negative"]

    _, model, change = start_from(tmp_path, new_labels, None, drop=["neutral"])

    assert change.order == ["very negative", "negative", "positive", "very positive"]
    assert model.config.id2label == dict(enumerate(change.order))
    assert model.config.label2id == {label: i for i, label in enumerate(change.order)}
    kept = torch.tensor([0, 1, 3])
    assert torch.equal(model.classifier.weight[:3], old.classifier.weight[kept])
    assert torch.equal(model.classifier.bias[:3], old.classifier.bias[kept])
    assert not torch.equal(model.classifier.weight[3], old.classifier.weight[2])
    assert torch.equal(model.bert.encoder.layer[1].output.dense.weight,
                       old.bert.encoder.layer[1].output.dense.weight)


def run_train(tmp_path, name: str, data, labels, model_params: dict):
    import yaml

    from textclf import train
    from textclf.data.dataset import write_labels, write_split

    folder = tmp_path / name
    folder.mkdir()
    for split, part in {"train": data, "val": data.iloc[::2]}.items():
        write_split(part, folder / f"{split}.parquet")
    write_labels(labels, folder / "labels.json")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"].update(model_params)
    params["train"].update(epochs=1, batch_size=8, lr=3e-3, precision="fp32")
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    train.main(["--params", str(folder / "params.yaml"),
                "--train", str(folder / "train.parquet"), "--val", str(folder / "val.parquet"),
                "--labels", str(folder / "labels.json"),
                "--model-dir", str(folder / "model"), "--live-dir", str(folder / "live")])
    return folder / "model"


@pytest.fixture(scope="module")
def four_class_model(tiny_model_dir, tmp_path_factory):
    """`textclf train` in-process on 4 of the 5 toy classes."""
    data = toy_reviews(per_class=10)
    folder = tmp_path_factory.mktemp("fresh")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TEXTCLF_CHECKPOINT_DIR", str(folder / "checkpoints"))
        return run_train(folder, "fresh", data[data["label"].isin(LABELS[:4])], LABELS[:4],
                         {"name": str(tiny_model_dir)})


def test_training_from_a_model_drops_one_class_and_adds_another(four_class_model, tmp_path,
                                                                 monkeypatch, capsys):
    monkeypatch.setenv("TEXTCLF_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    data = toy_reviews(per_class=10)
    new_labels = [label for label in LABELS if label != "neutral"]

    model_dir = run_train(tmp_path, "warm", data[data["label"] != "neutral"], new_labels,
                          {"init_from": str(four_class_model), "drop_labels": ["neutral"]})

    info = TrainingInfo.load(model_dir)
    assert info.labels == ["very negative", "negative", "positive", "very positive"]
    assert info.base_model == str(four_class_model)
    assert info.params["model"]["drop_labels"] == ["neutral"]
    config = json.loads((model_dir / "config.json").read_text())
    assert config["id2label"] == {str(i): label for i, label in enumerate(info.labels)}
    card = (model_dir / "README.md").read_text()
    assert f"""
## Labels carried over

Continued from the model in `{four_class_model}` (`model.init_from`), whose labels were
`very negative`, `negative`, `neutral`, `positive`.

- Dropped (`model.drop_labels`), with their head rows: `neutral`.
- Kept, with their learned head rows, in their old order: `very negative` (id 0, was 0), \
`negative` (id 1, was 1), `positive` (id 2, was 3).
- Added, with freshly initialised head rows: `very positive` (id 3).
""" in card
    assert "base_model:" not in card.split("---")[1], "a folder is not a Hugging Face id"
    assert (f"train: dropped neutral (model.drop_labels) from the model in {four_class_model}"
            in capsys.readouterr().out)


def test_dropping_a_class_the_data_still_has_stops_train_with_its_count(four_class_model,
                                                                         tmp_path, capsys):
    data = toy_reviews(per_class=10)  # 10 neutral in train, 5 more in validation

    with pytest.raises(SystemExit) as exit_:
        run_train(tmp_path, "warm", data, LABELS,
                  {"init_from": str(four_class_model), "drop_labels": ["neutral"]})

    assert exit_.value.code == 2
    assert (f"'neutral' is dropped from the model in {four_class_model}, but the new data has "
            f"15 examples of it in the train and validation splits") in capsys.readouterr().err
    assert not (tmp_path / "warm" / "model").exists()
