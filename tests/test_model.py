"""Training core, model folder round trip, predict command, model resolution."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import LABELS, toy_reviews
from textclf import predict
from textclf.model.batching import encode, length_grouped_batches, pad_batch
from textclf.model.engines.pytorch import autocast, predict_proba
from textclf.model.folder import TrainingInfo
from textclf.errors import UserError
from textclf.model.loading import (BUNDLED_SHA256, DEFAULT_MODEL, ModelError, bundled_model_dir,
                                   check_max_length, load_classifier, load_pretrained,
                                   resolve_model, save_classifier, verify_sha256)
from textclf.model.precision import choose_precision
from textclf.params import TrainParams
from textclf.training.loop import encode_split, fit
from textclf.training.state import Compute


def train_tiny(tiny_model_dir, epochs=3, seed=0, precision="fp32"):
    torch.manual_seed(seed)
    tokenizer, model = load_pretrained(str(tiny_model_dir), LABELS)
    data = toy_reviews(per_class=20)
    train = encode_split(tokenizer, data, LABELS, max_length=32)
    val = encode_split(tokenizer, data.iloc[::3], LABELS, max_length=32)
    params = TrainParams(batch_size=8, epochs=epochs, lr=3e-3, seed=seed)
    history = fit(model, train, val, params,
                  Compute(torch.device("cpu"), precision, tokenizer.pad_token_id), progress=False)
    return model, tokenizer, history


def test_classification_head_is_sized_to_the_labels(tiny_model_dir):
    # The tiny checkpoint has a 3-class head; the data has 5 labels.
    _, model = load_pretrained(str(tiny_model_dir), LABELS)
    assert model.config.num_labels == 5
    assert model.classifier.out_features == 5
    assert model.config.id2label[4] == "very positive"


def test_max_length_beyond_the_position_embeddings_is_refused_before_training(tiny_model_dir):
    tokenizer, model = load_pretrained(str(tiny_model_dir), LABELS)   # 128 positions
    check_max_length(128, model, tokenizer, "tiny")

    with pytest.raises(UserError, match=r"^model.max_length: 129 tokens, more than the 128 "
                                        r"that tiny reads \(its position embeddings\)"):
        check_max_length(129, model, tokenizer, "tiny")
    # What the check prevents: the embeddings cannot index a position past the last.
    ids = encode(tokenizer, ["word " * 200], 129)
    with pytest.raises((RuntimeError, IndexError)):
        model(input_ids=torch.tensor(ids), attention_mask=torch.ones(1, len(ids[0]),
                                                                     dtype=torch.long))


def test_max_length_of_a_roberta_model_leaves_out_the_padding_offset():
    # RoBERTa numbers positions from pad_token_id + 1: 130 embeddings hold 128 positions.
    import types

    import transformers

    config = transformers.RobertaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, intermediate_size=37,
                                        max_position_embeddings=130, pad_token_id=1)
    model = transformers.RobertaForSequenceClassification(config).eval()
    no_limit = types.SimpleNamespace(model_max_length=int(1e30))   # as many checkpoints say
    check_max_length(128, model, no_limit, "r")
    with pytest.raises(UserError, match="more than the 128 that r reads"):
        check_max_length(129, model, no_limit, "r")
    with pytest.raises((RuntimeError, IndexError)):
        model(input_ids=torch.full((1, 129), 5))


def test_fit_learns_and_keeps_the_best_epoch(tiny_model_dir):
    model, tokenizer, history = train_tiny(tiny_model_dir)
    assert [r.epoch for r in history] == [1, 2, 3]
    assert history[-1].train_loss < history[0].train_loss
    best = max(history, key=lambda r: r.val_f1_macro)
    data = toy_reviews(per_class=20).iloc[::3]
    ids = encode(tokenizer, data["text"].tolist(), 32)
    probs = predict_proba(model, ids, tokenizer.pad_token_id, 16, torch.device("cpu"), "fp32")
    labels = np.array([LABELS.index(l) for l in data["label"]])
    # The model left in memory is the best epoch's, not the last one's.
    assert (probs.argmax(1) == labels).mean() == pytest.approx(best.val_accuracy)


def test_same_seed_same_result(tiny_model_dir):
    _, _, first = train_tiny(tiny_model_dir, epochs=1, seed=3)
    _, _, second = train_tiny(tiny_model_dir, epochs=1, seed=3)
    assert first == second


def test_saved_model_predicts_the_same_after_reload(tiny_model_dir, tmp_path):
    model, tokenizer, _ = train_tiny(tiny_model_dir, epochs=1)
    texts = toy_reviews(per_class=4)["text"].tolist()
    ids = encode(tokenizer, texts, 32)
    before = predict_proba(model, ids, tokenizer.pad_token_id, 8, torch.device("cpu"), "fp32")
    save_classifier(model, tokenizer, tmp_path, TrainingInfo(labels=LABELS, max_length=32,
                                                             base_model="tiny"))
    reloaded, tokenizer2, info = load_classifier(tmp_path)
    after = predict_proba(reloaded, encode(tokenizer2, texts, 32), tokenizer2.pad_token_id, 8,
                          torch.device("cpu"), "fp32")
    assert info.labels == LABELS
    assert (before.argmax(1) == after.argmax(1)).all()
    np.testing.assert_allclose(before, after, atol=1e-5)

    # The predict command labels a CSV from the folder alone, keeping its columns.
    pd.DataFrame({"id": range(len(texts)), "review": texts}).to_csv(tmp_path / "in.csv",
                                                                    index=False)
    predict.main(["--model", str(tmp_path), "--input", str(tmp_path / "in.csv"),
                  "--text-column", "review", "--output", str(tmp_path / "out.csv"),
                  "--precision", "fp32"])
    out = pd.read_csv(tmp_path / "out.csv")
    assert list(out.columns) == ["id", "review", "predicted_label", "probability"]
    assert out["predicted_label"].tolist() == [LABELS[i] for i in after.argmax(1)]
    np.testing.assert_allclose(out["probability"], after.max(1), atol=1e-4)


def test_predict_from_arguments(tiny_model_dir, tmp_path, capsys):
    model, tokenizer, _ = train_tiny(tiny_model_dir, epochs=1)
    save_classifier(model, tokenizer, tmp_path, TrainingInfo(labels=LABELS, max_length=32,
                                                             base_model="tiny"))
    predict.main(["--model", str(tmp_path), "the food was superb", "dreadful room"])
    lines = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    assert [l["text"] for l in lines] == ["the food was superb", "dreadful room"]
    assert all(l["predicted_label"] in LABELS and 0 < l["probability"] <= 1 for l in lines)


def test_predict_rejects_a_folder_that_is_not_a_model(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        predict.main(["--model", str(tmp_path), "hello"])
    assert exit_info.value.code == 2
    assert str(tmp_path) in capsys.readouterr().err


def test_default_model_resolves_to_the_verified_bundled_copy():
    folder = resolve_model(DEFAULT_MODEL)
    assert (bundled_model_dir() / "model.safetensors").is_file()
    assert folder == str(bundled_model_dir())


def test_altered_bundled_weights_are_refused(tmp_path):
    for name in BUNDLED_SHA256:
        shutil.copy(bundled_model_dir() / name, tmp_path / name)
    verify_sha256(tmp_path, BUNDLED_SHA256)  # identical copies pass
    with open(tmp_path / "model.safetensors", "r+b") as stream:
        stream.seek(1000)
        stream.write(b"\x00\x01")
    with pytest.raises(ModelError, match="does not match"):
        verify_sha256(tmp_path, BUNDLED_SHA256)


def test_unknown_model_name_gives_a_clear_error():
    with pytest.raises(ModelError, match="model.name 'no-such-org/no-such-model'"):
        load_pretrained("no-such-org/no-such-model", LABELS)


def test_a_model_name_folder_that_holds_no_model_gives_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match=f"cannot load model.name '{tmp_path}': "):
        load_pretrained(str(tmp_path), LABELS)        # transformers raises ValueError here


def test_precision_choice(monkeypatch):
    import textclf.model.precision as cpu_precision

    cpu = torch.device("cpu")
    monkeypatch.setattr(cpu_precision, "choose_cpu_precision", lambda purpose: "bf16")
    assert choose_precision(cpu) == "bf16"
    assert choose_precision(cpu, "fp32") == "fp32"  # the param forces fp32
    monkeypatch.setattr(cpu_precision, "choose_cpu_precision", lambda purpose: "fp32")
    assert choose_precision(cpu) == "fp32"
    assert choose_precision(torch.device("mps")) == "fp32"
    # a GPU measures too, on a layer of the model's shape (MiniLM's when none is given)
    asked = []
    monkeypatch.setattr(cpu_precision, "choose_gpu_precision",
                        lambda device, purpose, shape: asked.append((purpose, shape)) or "bf16")
    cuda, big = torch.device("cuda"), cpu_precision.LayerShape(1024, 16, 4096, 32)
    assert choose_precision(cuda) == "bf16" and choose_precision(cuda, "fp32") == "fp32"
    assert choose_precision(cuda, purpose="train", shape=big) == "bf16"
    assert asked == [("infer", cpu_precision.LayerShape()), ("train", big)]


@pytest.mark.parametrize("bf16_supported, fp32, low_seconds, expected", [
    (True, 1.0, 2.1, "fp32"),   # a small model on a big GPU: launches and casts dominate
    (True, 1.0, 0.4, "bf16"),   # a large model: the tensor cores pay
    (False, 1.0, 0.5, "fp16"),  # no bf16 (before Ampere): fp16 is the candidate
    (False, 1.0, 0.95, "fp32"),
])
def test_gpu_precision_is_measured_per_layer_shape_and_cached(tmp_path, monkeypatch,
                                                              bf16_supported, fp32,
                                                              low_seconds, expected):
    """On an H200, bf16 autocast labelled with MiniLM at half fp32's speed
    (benchmarks/README.md, GPU): bf16 is taken only where it measures faster."""
    from textclf.model.precision import LayerShape, choose_gpu_precision

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_supported)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Test GPU")
    calls = []

    def measure(purpose, device, shape, low):
        calls.append((purpose, shape, low))
        return {"fp32": fp32, low: low_seconds}

    cache, cuda = tmp_path / "precision.json", torch.device("cuda")
    small, large = LayerShape(), LayerShape(1024, 16, 4096, 32)
    assert choose_gpu_precision(cuda, "infer", small, measure, cache) == expected
    assert choose_gpu_precision(cuda, "infer", small, measure, cache) == expected
    assert choose_gpu_precision(cuda, "train", small, measure, cache) == expected
    assert choose_gpu_precision(cuda, "infer", large, measure, cache) == expected
    candidate = "bf16" if bf16_supported else "fp16"
    assert calls == [("infer", small, candidate), ("train", small, candidate),
                     ("infer", large, candidate)], "once per purpose and shape, then cached"
    assert "Test GPU" in cache.read_text()


def test_layer_shape_is_read_from_the_models_config():
    from transformers import BertConfig, DistilBertConfig

    from textclf.model.precision import LayerShape

    bert = BertConfig(hidden_size=768, num_attention_heads=12, intermediate_size=3072)
    assert LayerShape.of(bert, 32) == LayerShape(768, 12, 3072, 32, 32)
    # DistilBERT names its sizes otherwise: hidden and heads map, the feed-forward is 4x
    distil = DistilBertConfig(dim=512, n_heads=8)
    assert LayerShape.of(distil, 8) == LayerShape(512, 8, 2048, 8, 32)
    assert LayerShape.of(object(), 0) == LayerShape(batch=1)


def test_layer_seconds_times_both_precisions_on_the_cpu():
    from textclf.model.precision import LayerShape, layer_seconds

    seconds = layer_seconds("train", repeats=1, shape=LayerShape(64, 4, 128, 2, 8))
    assert set(seconds) == {"fp32", "bf16"} and all(0 < s < 5 for s in seconds.values())


@pytest.mark.parametrize("fp32, bf16, expected", [
    (1.0, 0.3, "bf16"),     # AMX: several times faster
    (1.0, 0.95, "fp32"),    # a gain within noise is not worth bf16's rounding
    (1.0, 1.4, "fp32"),     # AVX512-BF16 without AMX: the casts cost more than they save
])
def test_cpu_precision_is_chosen_by_measurement_and_cached(tmp_path, fp32, bf16, expected):
    from textclf.model.precision import choose_cpu_precision

    calls = []

    def measure(purpose):
        calls.append(purpose)
        return {"fp32": fp32, "bf16": bf16}

    cache = tmp_path / "precision.json"
    avx512_bf16 = frozenset({"avx512f", "avx512_bf16"})
    assert choose_cpu_precision("train", measure, cache, avx512_bf16) == expected
    assert choose_cpu_precision("train", measure, cache, avx512_bf16) == expected
    assert calls == ["train"], "measured once, then cached"
    cache.write_text("{not json")
    assert choose_cpu_precision("infer", measure, cache, None) == expected  # flags unknown
    assert calls == ["train", "infer"], "a bad cache is measured again"
    # Known cases need no measurement: AMX runs bf16 fast, no native bf16 emulates it.
    amx = frozenset({"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})
    assert choose_cpu_precision("train", measure, tmp_path / "x.json", amx) == "bf16"
    assert choose_cpu_precision("train", measure, tmp_path / "x.json",
                                frozenset({"avx2", "avx512f"})) == "fp32"
    assert calls == ["train", "infer"]


@pytest.mark.parametrize("cap, left", [
    ("", {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}),
    ("ALL", {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}),
    ("avx512_core_amx", {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}),
    ("AVX512_CORE_BF16", {"avx512f", "avx512_bf16"}),       # an AVX512-BF16 CPU, no AMX
    ("AVX512_CORE", {"avx512f"}),
])
def test_onednn_isa_cap_hides_what_onednn_may_not_use(cap, left):
    from textclf.model.precision import usable_flags

    amx = frozenset({"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})
    assert usable_flags(amx, cap) == left
    assert usable_flags(None, cap) is None


def test_auto_precision_under_an_isa_cap_measures_instead_of_assuming_amx(tmp_path, monkeypatch):
    from textclf.model import precision as cpu_precision

    amx = frozenset({"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})
    monkeypatch.setattr(cpu_precision, "cpu_facts", lambda: ("a CPU", amx))
    slow_bf16 = lambda purpose: {"fp32": 1.0, "bf16": 1.5}   # noqa: E731
    cache = tmp_path / "precision.json"
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert cpu_precision.choose_cpu_precision("infer", slow_bf16, cache) == "bf16"  # AMX rule
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert cpu_precision.choose_cpu_precision("infer", slow_bf16, cache) == "fp32"
    assert "ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16" in cache.read_text(), "the cap is in the key"


@pytest.mark.parametrize("flags, int8_installed, int8_s, expected", [
    ({"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}, True, 0.2, "bf16"),  # AMX: bf16
    ({"avx512f", "avx512_bf16"}, True, 0.5, "int8"),   # bf16 measured slow, int8 2x fp32
    ({"avx2"}, True, 0.5, "int8"),                     # no BF16 instructions at all
    ({"avx2"}, True, 0.95, "fp32"),                    # a gain within noise: not worth it
    ({"avx2"}, False, 0.5, "fp32"),                    # ONNX Runtime not installed
])
def test_labelling_precision_is_bf16_then_measured_int8_then_fp32(tmp_path, flags,
                                                                    int8_installed, int8_s,
                                                                    expected):
    from textclf.model.precision import choose_labelling_precision

    calls = []

    def measure_bf16(purpose):
        calls.append(f"bf16 {purpose}")
        return {"fp32": 1.0, "bf16": 1.4}

    def measure_int8():
        calls.append("int8")
        return {"fp32": 1.0, "int8": int8_s}

    cache = tmp_path / "precision.json"
    for _ in range(2):
        assert choose_labelling_precision(measure_int8, measure_bf16, cache, frozenset(flags),
                                          int8_installed) == expected
    measured_int8 = int8_installed and expected != "bf16"
    assert calls.count("int8") == (1 if measured_int8 else 0), "measured once, then cached"
    if measured_int8:
        entry = next(v for k, v in json.loads(cache.read_text()).items() if "onnxruntime" in k)
        assert entry == {"fp32_s": 1.0, "int8_s": int8_s, "choice": expected}


def test_layer_measurement_runs_both_precisions():
    from textclf.model.precision import layer_seconds

    for purpose in ("train", "infer"):
        seconds = layer_seconds(purpose, repeats=1)
        assert seconds.keys() == {"fp32", "bf16"} and all(0 < s < 5 for s in seconds.values())


def test_bf16_autocast_on_cpu_runs_matmuls_in_bf16():
    with autocast(torch.device("cpu"), "bf16"):
        out = torch.nn.Linear(4, 4)(torch.ones(2, 4))
    assert out.dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "fp32"):
        assert torch.nn.Linear(4, 4)(torch.ones(2, 4)).dtype == torch.float32


def test_length_grouped_batches_cover_every_row_once_and_group_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 100, size=1000)
    batches = length_grouped_batches(lengths, 16, np.random.default_rng(1), group_batches=10)
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == list(range(1000))
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < 0.3 * np.ptp(lengths)  # far less padding than random batches
    again = length_grouped_batches(lengths, 16, np.random.default_rng(1), group_batches=10)
    assert all((a == b).all() for a, b in zip(batches, again))


def test_pad_batch_masks_padding():
    batch = pad_batch([[5, 6, 7], [8]], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_freeze_embeddings_keeps_token_embeddings_and_trains_the_rest(tiny_model_dir):
    torch.manual_seed(0)
    tokenizer, model = load_pretrained(str(tiny_model_dir), LABELS)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = encode_split(tokenizer, toy_reviews(per_class=8), LABELS, max_length=32)
    fit(model, data, data, TrainParams(batch_size=8, epochs=1, lr=1e-2, freeze_embeddings=True),
        Compute(torch.device("cpu"), "fp32", tokenizer.pad_token_id), progress=False)
    after = model.state_dict()
    assert torch.equal(before["bert.embeddings.word_embeddings.weight"],
                       after["bert.embeddings.word_embeddings.weight"])
    assert not torch.equal(before["bert.encoder.layer.0.attention.self.query.weight"],
                           after["bert.encoder.layer.0.attention.self.query.weight"])


def test_attention_kernel_choice():
    from textclf.model.loading import attention_for

    assert attention_for(torch.device("cpu"), 128) == "eager"   # measured faster on short texts
    assert attention_for(torch.device("cpu"), 512) == "sdpa"
    assert attention_for(torch.device("cuda"), 128) == "sdpa"


def test_eager_and_sdpa_attention_agree(tiny_model_dir):
    texts = toy_reviews(per_class=2)["text"].tolist()
    probs = {}
    for attention in ("eager", "sdpa"):
        _, model = load_pretrained(str(tiny_model_dir), LABELS, attention)
        tokenizer, _ = load_pretrained(str(tiny_model_dir), LABELS)
        torch.manual_seed(0)
        model.classifier.reset_parameters()
        probs[attention] = predict_proba(model, encode(tokenizer, texts, 32),
                                         tokenizer.pad_token_id, 4, torch.device("cpu"), "fp32")
    np.testing.assert_allclose(probs["eager"], probs["sdpa"], atol=1e-5)


@pytest.mark.parametrize("scale", [0.001, 0.05, 0.9, 1.0, 30.0, float("nan")])
def test_clip_gradients_is_bit_identical_to_clip_grad_norm(scale):
    """Skipping the multiply-by-1.0 when the norm is within bounds changes no bit, below,
    at and above max_norm, and with a non-finite gradient."""
    from textclf.training.loop import clip_gradients

    torch.manual_seed(1)
    ours = [torch.nn.Parameter(torch.randn(40, 30)), torch.nn.Parameter(torch.randn(30))]
    theirs = [torch.nn.Parameter(w.detach().clone()) for w in ours]
    for a, b in zip(ours, theirs):
        a.grad = torch.randn_like(a)
        b.grad = a.grad.clone()
    norm = torch.nn.utils.get_total_norm([w.grad for w in ours])
    for a, b in zip(ours, theirs):  # the gradients' norm becomes `scale`
        a.grad.mul_(scale / norm)
        b.grad.copy_(a.grad)
    clip_gradients(ours, 1.0)
    torch.nn.utils.clip_grad_norm_(theirs, 1.0, foreach=True)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0, equal_nan=True)
