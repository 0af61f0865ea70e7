"""Sentence embeddings from a classifier's own encoder: the last hidden state, mean-pooled
over the real tokens (padding left out), L2-normalised, so that a dot product is a cosine
similarity. `textclf select` spreads the texts it picks over these (textclf.monitoring.selection);
`layer_embeddings` pools any hidden layer, for the drift report's novelty (textclf.monitoring.novelty).

Batches are length-sorted and padded to their own longest text, as the PyTorch engine
does (textclf.model.engines.pytorch); only the pooled (N, H) vectors are kept, so memory
grows with the number of texts, not with their length.
"""

from __future__ import annotations

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
    """(L, N, H) unit-length mean-pooled hidden states of `texts` at each of `layers`, in
    PyTorch fp32 on the model's device whatever engine labels the texts."""
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
            hidden = model(**batch, output_hidden_states=True).hidden_states
            for at, layer in enumerate(layers):
                out[at, rows] = mean_pooled(hidden[layer].float(),
                                            batch["attention_mask"]).cpu().numpy()
    return out
