"""Are the current texts new to the model? Deep nearest-neighbour novelty.

Sun, Ming, Zhu and Li 2022, "Out-of-Distribution Detection with Deep Nearest Neighbors"
(ICML): a text's novelty is the distance from its L2-normalised embedding to the k-th
nearest training text's, in the classifier's own representation; no model of the density
is fitted, and a random share of the training texts serves as well as all of them. The
embedding here is the mean-pooled hidden state of the model's middle layer: on the demo
model, validation texts against SST-5 training sentences (the benchmark's rule-fitting
data), the middle layer told them apart best (per-text AUC 0.94 with k = 1; the last
layer, fitted to the labels, 0.79). benchmarks/performance_estimate.py prints the table.

A window is compared with the validation split, texts drawn like the training texts that
the model never trained on: the novelty AUC is the chance that a current text lies farther
from the training texts than a validation text (Mann-Whitney U / (n_current n_validation)),
0.5 when nothing changed. A share s of texts from elsewhere raises it to about
0.5 + s (AUC_text - 0.5), in proportion to the share, as their CBPE error grows; the
domain classifier, which must learn the difference from the window itself, cannot see 15
foreign texts among 100 (textclf.monitoring.estimate uses both).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from textclf.model.embeddings import layer_embeddings

NEIGHBOUR = 1              # k: the nearest training text (k = 5 and 10 separated less)
REFERENCE_ROWS = 2000      # training texts embedded at most (Sun et al.: a sample serves)
NOVEL_QUANTILE = 0.95      # a text is "novel" beyond 95% of the validation texts' distances
CHUNK = 1024               # rows per similarity block: (CHUNK, reference) floats at a time


def middle_layer(num_hidden_layers: int) -> int:
    """The hidden state used, as an index into `hidden_states` (0 is the token embeddings)."""
    return max(1, num_hidden_layers // 2)


def nearest_distance(vectors: np.ndarray, reference: np.ndarray, k: int = NEIGHBOUR
                     ) -> np.ndarray:
    """(N,) cosine distance from each unit row of `vectors` (N, H) to its k-th nearest
    unit row of `reference` (R, H)."""
    if not 1 <= k <= len(reference):
        raise ValueError(f"nearest_distance: k = {k} needs 1 to {len(reference)} "
                         f"reference rows")
    distances = np.empty(len(vectors))
    for start in range(0, len(vectors), CHUNK):
        similarity = vectors[start:start + CHUNK] @ reference.T               # (B, R)
        kth = np.partition(similarity, -k, axis=1)[:, -k]
        distances[start:start + CHUNK] = 1.0 - kth
    # float32 puts a unit vector's dot product with itself within 1e-7 of 1: rounded, a
    # text that is a training text lies at 0, tied with every other such text.
    return np.round(np.clip(distances, 0.0, 2.0), 6)


@dataclass(frozen=True)
class NoveltyResult:
    """How far the current texts lie from the training texts, against the validation split."""
    auc: float                 # P(current text farther than a validation text); 0.5 = same
    novel_share: float         # current texts beyond the validation texts' 95% quantile
    layer: int                 # index into hidden_states
    reference_rows: int
    validation_rows: int
    current_rows: int


def mann_whitney_auc(current: np.ndarray, validation: np.ndarray) -> float:
    """U / (n1 n0): the share of (current, validation) pairs where the current value is
    larger, ties counting one half."""
    from scipy.stats import rankdata

    current, validation = np.asarray(current, float), np.asarray(validation, float)
    if len(current) == 0 or len(validation) == 0:
        raise ValueError("mann_whitney_auc: needs at least one value on each side")
    ranks = rankdata(np.r_[current, validation])[:len(current)]
    u = ranks.sum() - len(current) * (len(current) + 1) / 2
    return float(u / (len(current) * len(validation)))


def compare_novelty(current: np.ndarray, validation: np.ndarray, layer: int,
                    reference_rows: int) -> NoveltyResult:
    """The window's novelty from the nearest-neighbour distances of its texts and of the
    validation split's texts (both to the same training texts)."""
    cut = float(np.quantile(validation, NOVEL_QUANTILE))
    return NoveltyResult(auc=mann_whitney_auc(current, validation),
                         novel_share=float(np.mean(np.asarray(current) > cut)), layer=layer,
                         reference_rows=reference_rows, validation_rows=len(validation),
                         current_rows=len(current))


def window_novelty(model, tokenizer, max_length: int, reference: Sequence[str],
                   validation: Sequence[str], current: Sequence[str],
                   batch_size: int = 64) -> NoveltyResult:
    """Embed the three sets with `model` (its middle layer) and compare the window's
    distances to the training texts with the validation split's. `reference` is sampled
    by the caller (at most REFERENCE_ROWS)."""
    layer = middle_layer(model.config.num_hidden_layers)
    embed = [layer_embeddings(model, tokenizer, texts, max_length, [layer], batch_size)[0]
             for texts in (reference, validation, current)]
    reference_vectors, validation_vectors, current_vectors = embed
    k = min(NEIGHBOUR, len(reference_vectors))
    return compare_novelty(nearest_distance(current_vectors, reference_vectors, k),
                           nearest_distance(validation_vectors, reference_vectors, k),
                           layer, len(reference_vectors))
