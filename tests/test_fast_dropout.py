"""textclf.training.dropout: the same dropout (keep 1 - p, scale 1 / (1 - p)) with a cheaper mask
on CPU, installed into transformers models through their public interfaces."""

from __future__ import annotations

import pytest
import torch

from textclf.training.dropout import ATTENTION, FastDropout, cheap_dropout, install


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_keeps_one_minus_p_and_scales_what_it_keeps(p):
    x = torch.ones(1_000_000)
    y = cheap_dropout(x, p)
    kept = y != 0
    # 1M Bernoulli draws: the kept share is within 5 standard deviations of 1 - p
    assert abs(kept.float().mean().item() - (1 - p)) < 5 * (p * (1 - p) / 1e6) ** 0.5
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / (1 - p)))
    assert y.shape == x.shape and y.dtype == x.dtype


def test_is_the_identity_when_not_training_or_p_is_zero():
    x = torch.randn(8, 16)
    assert cheap_dropout(x, 0.1, training=False) is x
    assert cheap_dropout(x, 0.0) is x
    assert torch.equal(cheap_dropout(x, 1.0), torch.zeros_like(x))


def test_follows_torch_seed_so_runs_reproduce_and_resume():
    x = torch.randn(64, 32)
    torch.manual_seed(7)
    first = cheap_dropout(x, 0.1)
    state = torch.get_rng_state()
    second = cheap_dropout(x, 0.1)
    torch.manual_seed(7)
    assert torch.equal(cheap_dropout(x, 0.1), first)
    torch.set_rng_state(state)                       # as a resumed run restores it
    assert torch.equal(cheap_dropout(x, 0.1), second)
    assert not torch.equal(first, second)


def test_gradient_is_the_mask_times_the_scale():
    x = torch.randn(32, 64, requires_grad=True)
    y = cheap_dropout(x, 0.25)
    y.sum().backward()
    expected = (y != 0).float() / 0.75
    assert torch.allclose(x.grad, expected)


def test_bf16_input_stays_bf16():
    x = torch.randn(4, 8, dtype=torch.bfloat16)
    assert cheap_dropout(x, 0.1).dtype == torch.bfloat16


def tiny(model_type: str):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.for_model(model_type, vocab_size=100, hidden_size=32,
                                  num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=64,
                                  num_labels=3, attn_implementation="eager")
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")


def test_install_replaces_every_dropout_and_predictions_do_not_change(tmp_path):
    model = tiny("bert").eval()
    ids = torch.randint(5, 100, (3, 10))
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0                                   # padding: the attention mask matters
    before = model(input_ids=ids, attention_mask=mask).logits
    changed = install(model)
    assert not any(type(m) is torch.nn.Dropout for m in model.modules())
    assert sum(type(m) is FastDropout for m in model.modules()) == len(changed) - 1
    assert model.config._attn_implementation == ATTENTION
    after = model(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(before, after, atol=1e-6)   # eval: same attention, no dropout
    model.train()
    torch.manual_seed(1)
    trained = model(input_ids=ids, attention_mask=mask).logits
    assert not torch.allclose(trained, after)          # training: dropout is on
    # a saved model names no attention function that other processes lack
    model.save_pretrained(tmp_path)
    assert ATTENTION not in (tmp_path / "config.json").read_text()


def test_other_architectures_keep_their_attention():
    model = tiny("distilbert")
    changed = install(model)
    assert changed and not any(c.startswith("attention") for c in changed)
    assert model.config._attn_implementation == "eager"
    assert not any(type(m) is torch.nn.Dropout for m in model.modules())
