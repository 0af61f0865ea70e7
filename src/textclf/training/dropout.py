"""Dropout with a cheaper random mask, for training on a CPU.

Why: PyTorch's CPU dropout draws its mask with `bernoulli_` from its mt19937 generator, one
element at a time on one thread (10-15 ns per element on the 2-core machines here). Training
MiniLM there, dropout was a third of every step: 545 ms per batch of 32 x 48 tokens, 360 ms
with dropout off (benchmarks/README.md). Here the same mask, keep with probability 1 - p
and scale by 1 / (1 - p), is drawn from numpy's SFC64 generator, 16 bits per element (p
rounded to 2^-16: 0.1 becomes 0.1000061; a p below 2^-17 rounds to no dropout): a MiniLM
training step 1.29-1.32x faster than with PyTorch's dropout (benchmarks/dropout_cost.py).
Each call seeds SFC64 from PyTorch's generator, so a run stays reproducible from its seed
and resumable (the checkpoint keeps PyTorch's generator state); only the random stream
differs from `torch.nn.Dropout`'s.

Applied where a mask is drawn, through public interfaces: the model's `nn.Dropout` modules
are replaced by `FastDropout` (a subclass), and the attention probabilities' dropout by
registering transformers' eager attention with this dropout under the name ATTENTION
(`AttentionInterface.register`, as transformers documents for custom attention), for the
model types whose attention is the plain BERT form. On a GPU, PyTorch's dropout is fast and
nothing is changed.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

ATTENTION = "textclf_eager"
# Model types whose eager attention is exactly BERT's (scores + additive mask, softmax,
# dropout, weighted sum): only these get the registered attention.
PLAIN_ATTENTION = frozenset({"bert", "roberta", "xlm-roberta", "camembert"})


def cheap_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """`F.dropout(x, p, training)` with the mask from numpy's SFC64 on a CPU tensor."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, training)
    seed = int(torch.randint(0, 2**62, ()))       # from PyTorch's (seeded) generator
    # 16 random bits per element, four from each 64-bit draw; p rounded to 2^-16 (0.1 ->
    # 0.1000061), and the scale from that same p, so the output stays unbiased.
    drop = min(round(p * 2**16), 2**16 - 1)
    bits = np.random.SFC64(seed).random_raw((x.numel() + 3) // 4).view(np.uint16)
    keep = torch.from_numpy(bits[: x.numel()] >= np.uint16(drop)).view(x.shape)
    # x * bool mask is one pass (the mask converts inside the kernel), the scale a second.
    return (x * keep).mul_(2**16 / (2**16 - drop))


class FastDropout(torch.nn.Dropout):
    """`nn.Dropout` drawing its mask with `cheap_dropout` (same `p`, same eval behaviour)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - nn.Dropout's name
        return cheap_dropout(input, self.p, self.training)


def eager_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                    value: torch.Tensor, attention_mask: torch.Tensor | None,
                    scaling: float | None = None, dropout: float = 0.0, **kwargs):
    """transformers' eager attention for BERT-like models, with `cheap_dropout`."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = cheap_dropout(F.softmax(weights, dim=-1), dropout, module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def install(model: torch.nn.Module, attention: bool = True) -> list[str]:
    """Use the cheaper dropout in `model` (in place): in its `nn.Dropout` modules, and in
    its attention where `attention` and the model type allow; returns what was changed."""
    changed = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is torch.nn.Dropout:
                setattr(module, child_name,
                        FastDropout(child.p, child.inplace).train(child.training))
                changed.append(f"{name}.{child_name}".lstrip("."))
    config = getattr(model, "config", None)
    if (attention and config is not None
            and getattr(config, "model_type", None) in PLAIN_ATTENTION
            and getattr(config, "_attn_implementation", None) == "eager"):
        from transformers import AttentionInterface, AttentionMaskInterface

        AttentionInterface.register(ATTENTION, eager_attention)
        AttentionMaskInterface.register(ATTENTION, AttentionMaskInterface()["eager"])
        model.set_attn_implementation(ATTENTION)
        changed.append(f"attention: {ATTENTION}")
    return changed
