"""The recipe levers (train.label_smoothing, rdrop, layer_lr_decay, ema_decay): each is off by
default and leaves the loop exactly as it was; on, each does what its name says."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from conftest import LABELS, toy_reviews
from textclf.model.loading import load_pretrained
from textclf.params import ParamsError, TrainParams, params_from_dict
from textclf.training.loop import batch_loss, encode_split, finish_epoch, make_batches, train_epoch
from textclf.training.state import Compute, build_optimizer, new_state

CPU = torch.device("cpu")


def tiny(tiny_model_dir):
    torch.manual_seed(0)
    tokenizer, model = load_pretrained(str(tiny_model_dir), LABELS)
    data = toy_reviews(per_class=8)
    return tokenizer, model, encode_split(tokenizer, data, LABELS, max_length=32)


def first_batch(data, pad_id):
    import numpy as np

    return make_batches(data, 8, pad_id, np.random.default_rng(0))[0]


@pytest.mark.parametrize("key, value, expected", [
    ("label_smoothing", 1.0, "a fraction in [0, 1)"),
    ("rdrop", -0.5, "a number >= 0"),
    ("layer_lr_decay", 0.0, "a factor in (0, 1]"),
    ("layer_lr_decay", 1.5, "a factor in (0, 1]"),
    ("ema_decay", 1.0, "a decay in (0, 1)"),
])
def test_out_of_range_levers_are_refused_naming_the_key(key, value, expected):
    raw = {"data": {"path": "d.csv"}, "model": {"name": "m"}, "train": {key: value}}
    with pytest.raises(ParamsError, match=rf"train\.{key} must be .*{re.escape(expected)}"):
        params_from_dict(raw)


def test_levers_are_off_by_default():
    params = TrainParams()
    assert (params.label_smoothing, params.rdrop, params.layer_lr_decay,
            params.ema_decay) == (0.0, 0.0, 1.0, None)


def test_layer_lr_decay_scales_each_layer_from_the_top(tiny_model_dir):
    _, model, _ = tiny(tiny_model_dir)
    optimizer, _ = build_optimizer(model, TrainParams(lr=1e-3, layer_lr_decay=0.5, warmup_ratio=0.0), 10, CPU)
    lr_of = {id(w): group["lr"] for group in optimizer.param_groups for w in group["params"]}
    named = dict(model.named_parameters())
    # 2 encoder layers: head 1e-3, layer 1 x0.5, layer 0 x0.25, embeddings x0.125.
    assert lr_of[id(named["classifier.weight"])] == pytest.approx(1e-3)
    assert lr_of[id(named["bert.pooler.dense.weight"])] == pytest.approx(1e-3)
    assert lr_of[id(named["bert.encoder.layer.1.output.dense.weight"])] == pytest.approx(5e-4)
    assert lr_of[id(named["bert.encoder.layer.0.attention.self.query.weight"])] == \
        pytest.approx(2.5e-4)
    assert lr_of[id(named["bert.embeddings.word_embeddings.weight"])] == pytest.approx(1.25e-4)
    decay_of = {id(w): g["weight_decay"] for g in optimizer.param_groups for w in g["params"]}
    assert decay_of[id(named["bert.encoder.layer.1.output.dense.bias"])] == 0.0
    assert len(lr_of) == sum(1 for w in model.parameters() if w.requires_grad)


def test_without_layer_decay_there_are_the_two_usual_groups(tiny_model_dir):
    _, model, _ = tiny(tiny_model_dir)
    optimizer, _ = build_optimizer(model, TrainParams(lr=1e-3, weight_decay=0.01, warmup_ratio=0.0), 10, CPU)
    assert [(g["lr"], g["weight_decay"]) for g in optimizer.param_groups] == \
        [(1e-3, 0.01), (1e-3, 0.0)]


def test_label_smoothing_and_rdrop_losses(tiny_model_dir):
    tokenizer, model, data = tiny(tiny_model_dir)
    batch = first_batch(data, tokenizer.pad_token_id)
    model.eval()    # no dropout: the two R-Drop passes agree and the KL term is 0
    with torch.no_grad():
        plain = batch_loss(model, batch, TrainParams())
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        smoothed = batch_loss(model, batch, TrainParams(label_smoothing=0.2))
        rdrop_eval = batch_loss(model, batch, TrainParams(rdrop=5.0))
    assert plain == pytest.approx(F.cross_entropy(logits, batch["labels"]).item(), abs=1e-6)
    assert smoothed == pytest.approx(
        F.cross_entropy(logits, batch["labels"], label_smoothing=0.2).item(), abs=1e-6)
    assert rdrop_eval == pytest.approx(plain.item(), abs=1e-5)
    model.train()   # dropout: the passes differ, so the KL term adds to the loss
    torch.manual_seed(1)
    with torch.no_grad():
        without = batch_loss(model, batch, TrainParams(rdrop=0.0))
        torch.manual_seed(1)
        with_kl = batch_loss(model, batch, TrainParams(rdrop=1e3))
    assert with_kl.item() > without.item() + 1e-3


def test_ema_weights_are_validated_kept_and_checkpointed(tiny_model_dir):
    tokenizer, model, data = tiny(tiny_model_dir)
    params = TrainParams(batch_size=8, epochs=1, lr=3e-3, ema_decay=0.5)
    compute = Compute(CPU, "fp32", tokenizer.pad_token_id)
    state = new_state(model, params, len(data.ids), compute)
    loss = train_epoch(state, data, params, compute, progress=False)
    assert int(state.average.n_averaged) == 5    # one update per optimizer step
    raw, averaged = dict(model.named_parameters()), dict(state.average.module.named_parameters())
    assert not torch.equal(raw["classifier.weight"], averaged["classifier.weight"])
    finish_epoch(state, loss, data, 16, compute)
    assert torch.equal(state.best_weights["classifier.weight"], averaged["classifier.weight"])

    saved = state.state_dict()
    _, other_model, _ = tiny(tiny_model_dir)
    restored = new_state(other_model, params, len(data.ids), compute)
    restored.load_state_dict(saved)
    assert int(restored.average.n_averaged) == 5
    assert torch.equal(restored.average.module.classifier.weight, averaged["classifier.weight"])

