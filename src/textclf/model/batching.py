"""Token ids in, padded batches out: tokenize once, pad each batch to its own length."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def encode(tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids per text, truncated to `max_length`, not padded."""
    return tokenizer(list(texts), truncation=True, max_length=max_length,
                     return_attention_mask=False, return_token_type_ids=False)["input_ids"]


def length_grouped_batches(lengths: Sequence[int], batch_size: int,
                           rng: np.random.Generator, group_batches: int = 50) -> list[np.ndarray]:
    """Shuffled batches of similar lengths, so little compute goes to padding.

    Shuffle everything, cut into groups of `group_batches` batches, sort each
    group by length, cut into batches, shuffle the batch order: the same idea
    as transformers' LengthGroupedSampler.
    """
    lengths = np.asarray(lengths)
    order = rng.permutation(len(lengths))
    group = batch_size * group_batches
    batches = []
    for start in range(0, len(order), group):
        chunk = order[start:start + group]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def sorted_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Batches in order of length (for inference; order is restored by the caller)."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def pad_batch(ids: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """input_ids and attention_mask of shape (B, longest in batch)."""
    width = max(len(seq) for seq in ids)
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for row, seq in enumerate(ids):
        input_ids[row, :len(seq)] = seq
        mask[row, :len(seq)] = 1
    return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask)}
