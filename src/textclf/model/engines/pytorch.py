"""The PyTorch engine: a model's forward pass in fp32, bf16 or fp16, in length-sorted batches."""

from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np
import torch

from textclf.model.batching import pad_batch, sorted_batches


def autocast(device: torch.device, precision: str):
    """Mixed precision for the forward pass; weights stay fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.inference_mode()
def predict_proba(model, ids: Sequence[Sequence[int]], pad_id: int, batch_size: int,
                  device: torch.device, precision: str) -> np.ndarray:
    """Class probabilities (N, C) in input order, computed in length-sorted batches."""
    model.eval()
    probs = np.zeros((len(ids), model.config.num_labels), dtype=np.float32)
    for rows in sorted_batches([len(seq) for seq in ids], batch_size):
        batch = {k: v.to(device) for k, v in pad_batch([ids[i] for i in rows], pad_id).items()}
        with autocast(device, precision):
            logits = model(**batch).logits
        probs[rows] = logits.float().softmax(dim=-1).cpu().numpy()
    return probs
