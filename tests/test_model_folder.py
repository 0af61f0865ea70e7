"""The model folder contract (training_info.json, model card, Hugging Face compatibility),
predict's handling of bad input, the best-epoch rule, divergence, and warm starts."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import LABELS, toy_reviews
from textclf import predict
from textclf.model.batching import encode
from textclf.model.engines.pytorch import predict_proba
from textclf.model.folder import FORMAT_VERSION, ModelError, TrainingInfo
from textclf.model.loading import load_classifier, load_pretrained, save_classifier
from textclf.params import TrainParams
from textclf.training.loop import encode_split, fit, train_epoch
from textclf.training.loop import TrainingDiverged
from textclf.training.state import Compute, EpochResult, best_epoch, new_state
from textclf.training.warm_start import label_row_names, load_warm_start, plan_labels

CPU = torch.device("cpu")


def tiny_trained(tiny_model_dir, labels=LABELS, epochs=2, per_class=20):
    torch.manual_seed(0)
    tokenizer, model = load_pretrained(str(tiny_model_dir), labels)
    data = toy_reviews(per_class=per_class)
    data = data[data["label"].isin(labels)]
    train = encode_split(tokenizer, data, labels, 32)
    history = fit(model, train, train, TrainParams(batch_size=8, epochs=epochs, lr=3e-3, seed=0),
                  Compute(CPU, "fp32", tokenizer.pad_token_id), progress=False)
    return model, tokenizer, history


@pytest.fixture(scope="module")
def model_folder(tiny_model_dir, tmp_path_factory):
    model, tokenizer, _ = tiny_trained(tiny_model_dir)
    folder = tmp_path_factory.mktemp("classifier")
    save_classifier(model, tokenizer, folder,
                    TrainingInfo(labels=LABELS, max_length=32, base_model="tiny", best_epoch=2))
    return folder


def test_training_info_round_trip_and_hf_max_length(model_folder):
    info = TrainingInfo.load(model_folder)
    assert info.labels == LABELS and info.max_length == 32
    assert info.format_version == FORMAT_VERSION
    # pipeline() truncates to the tokenizer's limit: it is the length training used.
    config = json.loads((model_folder / "tokenizer_config.json").read_text())
    assert config["model_max_length"] == 32


@pytest.mark.parametrize("content, expected", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    (json.dumps({"format_version": 99, "labels": ["a", "b"]}), "format_version 99"),
    (json.dumps({"format_version": 1, "labels": ["a"], "max_length": 8, "base_model": "x"}),
     "at least 2 distinct"),
    (json.dumps({"format_version": 1, "labels": ["a", "b"], "max_length": "8",
                 "base_model": "x"}), "max_length must be a positive integer"),
    (json.dumps({"format_version": 1, "labels": ["a", "b"], "max_length": 8,
                 "base_model": "x", "colour": 1}), "unknown field 'colour'"),
])
def test_malformed_or_foreign_training_info_is_refused(tmp_path, content, expected):
    (tmp_path / "training_info.json").write_text(content)
    with pytest.raises(ModelError, match=expected) as err:
        TrainingInfo.load(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_any_hugging_face_classification_folder_is_accepted(model_folder, tmp_path):
    model, tokenizer, _ = load_classifier(model_folder)
    model.save_pretrained(tmp_path)   # a plain HF folder: no training_info.json
    tokenizer.save_pretrained(tmp_path)
    _, _, info = load_classifier(tmp_path)
    assert info.labels == LABELS and info.max_length == 32


def test_pipeline_and_predict_agree(model_folder):
    from transformers import pipeline

    texts = [t * 20 for t in toy_reviews(per_class=2)["text"]]   # longer than max_length
    classify = pipeline("text-classification", model=str(model_folder), device="cpu")
    model, tokenizer, info = load_classifier(model_folder)
    probs = predict_proba(model, encode(tokenizer, texts, info.max_length),
                          tokenizer.pad_token_id, 8, CPU, "fp32")
    # pipeline() truncates only when asked; it then cuts where training did.
    assert [r["label"] for r in classify(texts, truncation=True)] == [LABELS[i] for i in probs.argmax(1)]


@pytest.mark.parametrize("damage, expected", [
    ("truncate", "cannot load the model weights"),
    ("model_type", "cannot load its config"),
    ("no_config", "no config.json"),
])
def test_damaged_model_folders_give_one_clear_error(model_folder, tmp_path, damage, expected):
    import shutil

    folder = tmp_path / "damaged"
    shutil.copytree(model_folder, folder)
    if damage == "truncate":
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "model_type":
        config = json.loads((folder / "config.json").read_text())
        config["model_type"] = "no-such-architecture"
        (folder / "config.json").write_text(json.dumps(config))
    else:
        (folder / "config.json").unlink()
    with pytest.raises(ModelError, match=expected):
        load_classifier(folder)


@pytest.mark.parametrize("args, expected", [
    (["--batch-size", "0", "hi"], "--batch-size: expected a whole number between 1 and 100000, found '0'"),
    (["--batch-size", "-3", "hi"], "expected a whole number between 1 and 100000, found '-3'"),
    (["   "], "text argument 1: empty, whitespace-only or invisible-only text"),
    (["fine", "\udcff\udcfe"], "text argument 2: not valid UTF-8"),
])
def test_predict_refuses_bad_arguments(model_folder, capsys, args, expected):
    with pytest.raises(SystemExit) as exit_info:
        predict.main(["--model", str(model_folder), *args])
    assert exit_info.value.code == 2
    assert expected in capsys.readouterr().err


def test_predict_refuses_bad_files(model_folder, tmp_path, capsys):
    source = tmp_path / "in.csv"
    cases = {
        "header only": ("text\n", ["--output", str(tmp_path / "out.csv")], "no rows"),
        "blank text": ("text,id\nfine,1\n  ,2\n", ["--output", str(tmp_path / "out.csv")],
                       "row 2: empty, whitespace-only or invisible-only text"),
        "output is a folder": ("text\nfine\n", ["--output", str(tmp_path)], "is a folder"),
        "output is the input": ("text\nfine\n", ["--output", str(source)], "is the --input file"),
    }
    for name, (content, extra, expected) in cases.items():
        source.write_text(content)
        with pytest.raises(SystemExit) as exit_info:
            predict.main(["--model", str(model_folder), "--input", str(source), *extra])
        assert exit_info.value.code == 2, name
        assert expected in capsys.readouterr().err, name
        assert source.read_text() == content, "the input is never touched"
    assert not (tmp_path / "out.csv").exists()


def test_best_epoch_ties_go_to_lower_loss_then_later_epoch():
    history = [EpochResult(1, 1.0, 0.50, 1.0, 1.0), EpochResult(2, 0.5, 0.30, 1.0, 1.0),
               EpochResult(3, 0.4, 0.30, 1.0, 1.0), EpochResult(4, 0.3, 0.20, 0.9, 0.9)]
    assert best_epoch(history).epoch == 3
    assert best_epoch(history[:2]).epoch == 2


def test_a_diverging_loss_stops_training(tiny_model_dir):
    tokenizer, model = load_pretrained(str(tiny_model_dir), LABELS)
    with torch.no_grad():
        model.classifier.weight.fill_(float("nan"))
    params = TrainParams(batch_size=8, epochs=1, lr=1e-3)
    data = encode_split(tokenizer, toy_reviews(per_class=4), LABELS, 32)
    compute = Compute(CPU, "fp32", tokenizer.pad_token_id)
    state = new_state(model, params, len(data.ids), compute)
    with pytest.raises(TrainingDiverged, match="loss became nan in epoch 1, step 1"):
        train_epoch(state, data, params, compute, progress=False)


def test_warm_start_label_order_and_missing_labels():
    assert plan_labels(["b", "a"], ["a", "b", "c"], "m").order == ["b", "a", "c"]
    with pytest.raises(Exception, match="knows label\\(s\\) 'b' that the new data lacks.*"
                                        "list them in model.drop_labels"):
        plan_labels(["a", "b"], ["a", "c"], "m")


def test_new_class_keeps_old_head_rows_and_is_learnt(tiny_model_dir, tmp_path):
    old_labels = LABELS[:4]
    model, tokenizer, _ = tiny_trained(tiny_model_dir, labels=old_labels, epochs=3)
    save_classifier(model, tokenizer, tmp_path,
                    TrainingInfo(labels=old_labels, max_length=32, base_model="tiny"))
    old_state = {k: v.clone() for k, v in model.state_dict().items()}

    tokenizer, grown, order = load_warm_start(tmp_path, sorted(LABELS), None)
    assert order == old_labels + ["very positive"]
    head = grown.classifier
    assert torch.equal(head.weight[:4], old_state["classifier.weight"])
    assert torch.equal(head.bias[:4], old_state["classifier.bias"])
    assert grown.config.id2label[4] == "very positive"
    assert label_row_names(grown) == ["classifier.weight", "classifier.bias"]

    data = toy_reviews(per_class=20)
    encoded = encode_split(tokenizer, data, order, 32)
    fit(grown, encoded, encoded, TrainParams(batch_size=8, epochs=8, lr=3e-3, seed=0),
        Compute(CPU, "fp32", tokenizer.pad_token_id), progress=False)
    probs = predict_proba(grown, encoded.ids, tokenizer.pad_token_id, 16, CPU, "fp32")
    assert set(probs.argmax(1)) == set(range(5)), "every class, the new one too, is predicted"


def test_warm_start_beats_a_fresh_start_after_one_epoch(tiny_model_dir, model_folder):
    data = toy_reviews(per_class=20)
    scores = {}
    for name in ("fresh", "warm"):
        torch.manual_seed(1)
        if name == "warm":
            tokenizer, model, order = load_warm_start(model_folder, LABELS, None)
        else:
            (tokenizer, model), order = load_pretrained(str(tiny_model_dir), LABELS), LABELS
        encoded = encode_split(tokenizer, data, order, 32)
        history = fit(model, encoded, encoded, TrainParams(batch_size=8, epochs=1, lr=3e-3,
                                                           seed=1),
                      Compute(CPU, "fp32", tokenizer.pad_token_id), progress=False)
        scores[name] = history[0].val_f1_macro
    assert scores["warm"] > scores["fresh"]


def test_train_and_evaluate_entry_points_write_a_complete_model_folder(tiny_model_dir, tmp_path,
                                                                      monkeypatch, capsys):
    """In-process `textclf train` + `textclf evaluate` on toy splits."""
    import yaml

    from conftest import REPO
    from textclf import evaluate, train
    from textclf.data.dataset import write_labels, write_split

    data = toy_reviews(per_class=12)
    for name, part in {"train": data, "val": data.iloc[::3], "test": data.iloc[1::3]}.items():
        write_split(part, tmp_path / f"{name}.parquet")
    write_labels(LABELS, tmp_path / "labels.json")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"]["name"] = str(tiny_model_dir)
    params["train"].update(epochs=2, batch_size=8, lr=3e-3, precision="fp32")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setenv("TEXTCLF_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    model_dir = tmp_path / "model"

    train.main(["--params", str(tmp_path / "params.yaml"), "--train", str(tmp_path / "train.parquet"),
                "--val", str(tmp_path / "val.parquet"), "--labels", str(tmp_path / "labels.json"),
                "--model-dir", str(model_dir), "--live-dir", str(tmp_path / "live")])
    evaluate.main(["--params", str(tmp_path / "params.yaml"), "--model-dir", str(model_dir),
                   "--test", str(tmp_path / "test.parquet"), "--live-dir", str(tmp_path / "eval")])

    info = TrainingInfo.load(model_dir)
    assert info.labels == LABELS and info.best_epoch in (1, 2) and info.max_length == 128
    assert set(info.data_sha256) == {str(tmp_path / f) for f in
                                     ("train.parquet", "val.parquet", "labels.json")}
    card = (model_dir / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\npipeline_tag: text-classification")
    assert all(f"`{label}`" in card for label in LABELS) and "Intended use and limits" in card
    assert "sha256" in card and "lr: 0.003" in card
    assert "Labels carried over" not in card, "not warm-started"
    summary = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert summary["best_epoch"] == info.best_epoch and "val_loss" in summary["best"]
    # the temperature fitted on the validation split, recorded in the folder and the summary
    assert info.calibrator() is not None
    assert summary["calibration"]["temperature"] == info.calibrator().temperature
    assert summary["calibration"]["nll"] <= summary["calibration"]["nll_uncalibrated"] + 1e-9
    scores = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(scores) == {"accuracy", "f1_macro", "f1_weighted"}  # exp show stays narrow
    calibration = json.loads((tmp_path / "eval" / "calibration.json").read_text())
    assert calibration["temperature"] == info.calibrator().temperature
    assert set(calibration["calibrated"]) == {"ece", "classwise_ece", "nll", "brier"}
    for name in ("calibrated", "uncalibrated"):
        table = json.loads((tmp_path / "eval" / "plots" / "reliability" / f"{name}.json")
                           .read_text())
        assert sum(row["count"] for row in table) == 20
    per_class = json.loads((tmp_path / "eval" / "per_class.json").read_text())
    assert list(per_class) == LABELS
    assert not list((tmp_path / "checkpoints").glob("*.pt")), "finished: checkpoint removed"
    out = capsys.readouterr().out
    assert "no checkpoint to resume from" in out and "evaluate: 20 test examples" in out
