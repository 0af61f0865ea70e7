"""Sentence embeddings from a classifier's own encoder: the last hidden state, mean-pooled
over the real tokens (padding left out), L2-normalised, so that a dot product is a cosine
similarity. `textclf select` spreads the texts it picks over these (textclf.monitoring.selection);
`layer_embeddings` pools any hidden layer, for the drift report's novelty (textclf.monitoring.novelty).

Batches are length-sorted and padded to their own longest text, as the PyTorch engine
does (textclf.model.engines.pytorch); only the pooled (N, H) vectors are kept, so memory
grows with the number of texts, not with their length.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np
import torch

from textclf.model.batching import encode, pad_batch, sorted_batches
from textclf.model.engines.pytorch import autocast


@torch.inference_mode()
def probabilities_and_embeddings(model, ids: Sequence[Sequence[int]], pad_id: int,
                                 batch_size: int, device: torch.device,
                                 precision: str = "fp32") -> tuple[np.ndarray, np.ndarray]:
    """(class probabilities (N, C), sentence embeddings (N, H)) of token ids `ids`, in
    input order, from one forward pass per batch."""
    model.eval()
    probs = np.zeros((len(ids), model.config.num_labels), dtype=np.float32)
    vectors = np.zeros((len(ids), model.config.hidden_size), dtype=np.float32)
    for rows in sorted_batches([len(seq) for seq in ids], batch_size):
        batch = {k: v.to(device) for k, v in pad_batch([ids[i] for i in rows], pad_id).items()}
        with autocast(device, precision):
            output = model(**batch, output_hidden_states=True)
        probs[rows] = output.logits.float().softmax(dim=-1).cpu().numpy()
        vectors[rows] = mean_pooled(output.hidden_states[-1].float(),
                                    batch["attention_mask"]).cpu().numpy()
    return probs, vectors


def mean_pooled(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, H) hidden states and (B, T) attention mask -> (B, H) unit vectors: the mean
    over real tokens, as sentence-transformers pools MiniLM."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)                  # (B, T, 1)
    summed = (hidden * weights).sum(dim=1)                          # (B, H)
    mean = summed / weights.sum(dim=1).clamp(min=1.0)
    return torch.nn.functional.normalize(mean, dim=-1)


def sentence_embeddings(model, tokenizer, texts: Sequence[str], max_length: int, *,
                        batch_size: int = 64, device: torch.device | None = None,
                        precision: str = "fp32") -> np.ndarray:
    """(N, H) unit-length embeddings of `texts` from `model` (a classifier loaded by
    textclf.model.loading.load_classifier, or a Labeller's `.model`)."""
    if not texts:
        return np.zeros((0, model.config.hidden_size), dtype=np.float32)
    device = device or next(model.parameters()).device
    ids = encode(tokenizer, texts, max_length)
    return probabilities_and_embeddings(model, ids, tokenizer.pad_token_id, batch_size,
                                        device, precision)[1]


def layer_embeddings(model, tokenizer, texts: Sequence[str], max_length: int,
                     layers: Sequence[int], batch_size: int = 64) -> np.ndarray:
    """(L, N, H) unit-length mean-pooled hidden states of `texts` at each of `layers` (as
    indices into `hidden_states`: 0 is the token embeddings, i the output of encoder layer
    i), in PyTorch fp32 on the model's device whatever engine labels the texts. The
    layers above the deepest one asked for are not run (`stop_after`): the drift report's
    novelty needs the middle layer only, half the encoder."""
    hidden_size = model.config.hidden_size
    out = np.zeros((len(layers), len(texts), hidden_size), dtype=np.float32)
    if not texts:
        return out
    device = next(model.parameters()).device
    ids = encode(tokenizer, texts, max_length)
    model.eval()
    with torch.inference_mode():
        for rows in sorted_batches([len(seq) for seq in ids], batch_size):
            batch = {k: v.to(device) for k, v in
                     pad_batch([ids[i] for i in rows], tokenizer.pad_token_id).items()}
            hidden = hidden_states(model, batch, layers)
            for at, layer in enumerate(layers):
                out[at, rows] = mean_pooled(hidden[layer].float(),
                                            batch["attention_mask"]).cpu().numpy()
    return out


def hidden_states(model, batch: dict, layers: Sequence[int]) -> dict[int, torch.Tensor]:
    """{layer: (B, T, H) hidden state} for each of `layers`, running the encoder only as
    deep as the deepest of them where its layers can be found (`encoder_layers`), else
    the whole model."""
    blocks = encoder_layers(model)
    if blocks is None or min(layers) < 1:
        found = model(**batch, output_hidden_states=True).hidden_states
        return {layer: found[layer] for layer in layers}
    with stop_after(blocks, sorted(set(layers))) as captured:
        model(**batch)
    return captured


class _Reached(Exception):
    """Raised by a forward hook once the deepest layer asked for has run."""


@contextlib.contextmanager
def stop_after(blocks: torch.nn.ModuleList, layers: Sequence[int]):
    """Within the block, a forward pass records the output of encoder layer i (1-based, as
    `hidden_states` counts) for each i in `layers` into the yielded dict and is cut short,
    by an exception the block swallows, after the last of them: the hooks transformers
    itself records `hidden_states` with, plus a stop."""
    captured: dict[int, torch.Tensor] = {}
    deepest = max(layers)

    def record(layer: int):
        def hook(module, args, output):
            captured[layer] = output[0] if isinstance(output, tuple) else output
            if layer == deepest:
                raise _Reached
        return hook

    handles = [blocks[layer - 1].register_forward_hook(record(layer)) for layer in layers]
    try:
        yield captured
    except _Reached:
        pass
    finally:
        for handle in handles:
            handle.remove()
    if len(captured) != len(layers):
        raise RuntimeError(f"stop_after: layers {sorted(captured)} ran, {list(layers)} "
                           f"were asked for")


def encoder_layers(model) -> torch.nn.ModuleList | None:
    """The model's encoder layers, in order: the ModuleList named `layer` or `layers` (as
    BERT-like models name it, and textclf.training.state's layer-wise lr finds it) holding
    `num_hidden_layers` modules; None when there is no single such list."""
    found = [module for name, module in model.named_modules()
             if isinstance(module, torch.nn.ModuleList)
             and name.rsplit(".", 1)[-1] in ("layer", "layers")
             and len(module) == model.config.num_hidden_layers]
    return found[0] if len(found) == 1 else None
