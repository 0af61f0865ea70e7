"""Which texts to label next: uncertainty on the model's (calibrated) probabilities, spread
by its own sentence embeddings, without near-duplicates. Pure: arrays in, rows out;
`textclf select` reads the texts and writes what is chosen.

Strategies (`select(..., strategy)`):

- `margin`: the N texts with the smallest gap between the two most probable classes
  (margin sampling, Scheffer, Decomain and Wrobel 2001);
- `entropy`: the N texts whose class distribution has the highest entropy;
- `diverse-margin`: the `pool_factor` x N texts of smallest margin, then N of them by
  k-center greedy on their embeddings (the core-set selection of Sener and Savarese 2018,
  within the shortlist): start with the least sure, then repeatedly take the text farthest
  (cosine distance) from every text taken so far, so that a batch does not spend its
  labels on many texts that say the same thing;
- `random`: N texts drawn uniformly (seeded): the baseline.

Every strategy skips a text whose cosine similarity to one already chosen is at least
`max_similarity` (a near-duplicate: the same review with another spelling, say). Texts
already labelled or in the training data are removed before, by the caller, as the same
text once normalised (textclf.canonical; `unseen_rows`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Collection, Sequence

import numpy as np

from textclf.canonical import canonical_text

STRATEGIES = ("diverse-margin", "margin", "entropy", "random")
# Measured on SST-5 (benchmarks/active_learning.py): diverse-margin did not beat random at
# 1,500 labels (-3.4 points of dev macro-F1, 2 seeds), so random stays the default.
DEFAULT_STRATEGY = "random"
POOL_FACTOR = 5            # texts shortlisted and embedded: POOL_FACTOR x N (least sure, or drawn)
# Cosine similarity from which a text is a near-duplicate. A fine-tuned classifier's
# embeddings crowd together: with the demo model, 1% of pairs of distinct SST-5 sentences
# reach 0.95 (so at N = 200 most texts would have a "duplicate"), none of 79,800 reach
# 0.99, which still catches 61% of one-word edits (benchmarks/active_learning.py
# --near-duplicates).
MAX_SIMILARITY = 0.99

Embed = Callable[[np.ndarray], np.ndarray]      # pool rows (M,) -> unit vectors (M, H)


@dataclass(frozen=True)
class Selection:
    rows: np.ndarray            # (n,) pool rows chosen, in the order chosen
    scores: np.ndarray          # (n,) their uncertainty (higher: less sure)
    shortlisted: int            # texts embedded and considered
    near_duplicates: int        # shortlisted texts left out as near-duplicates of a chosen one


def margin_uncertainty(probs: np.ndarray) -> np.ndarray:
    """(N, C) probabilities -> (N,) 1 - (top probability - second): 1 at a tie, 0 when sure."""
    top2 = np.sort(np.asarray(probs, dtype=np.float64), axis=1)[:, -2:]
    return 1.0 - (top2[:, 1] - top2[:, 0])


def entropy_uncertainty(probs: np.ndarray) -> np.ndarray:
    """(N, C) probabilities -> (N,) entropy / log C: 1 for the uniform distribution."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=1) / np.log(p.shape[1])


def uncertainty(probs: np.ndarray, strategy: str) -> np.ndarray:
    """The score a strategy ranks by (entropy for `entropy`, else the margin's)."""
    return entropy_uncertainty(probs) if strategy == "entropy" else margin_uncertainty(probs)


def unseen_rows(texts: Sequence[str], seen: Collection[str]) -> np.ndarray:
    """Rows of `texts` whose normalised text is not in `seen` (normalised texts), one row per
    text: its last, the most recent prediction in a log."""
    last: dict[str, int] = {}
    for row, text in enumerate(texts):
        key = canonical_text(text)
        if key not in seen:
            last[key] = row
    return np.array(sorted(last.values()), dtype=np.int64)


def select(probs: np.ndarray, n: int, strategy: str, embed: Embed, *,
           candidates: np.ndarray | None = None, pool_factor: int = POOL_FACTOR,
           max_similarity: float = MAX_SIMILARITY, seed: int = 0) -> Selection:
    """Up to `n` rows of the pool whose class probabilities are `probs` (N, C), chosen by
    `strategy` among `candidates` (default: every row). `embed` gives the unit-length
    sentence embeddings of the rows it is asked for: only the shortlist (`pool_factor` x n
    rows, more where near-duplicates leave too few) is embedded. Fewer than `n` come back
    only when the candidates run out."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
    candidates = np.arange(len(probs)) if candidates is None else np.asarray(candidates)
    scores = uncertainty(probs[candidates], strategy)
    if strategy == "random":
        order = np.random.default_rng(seed).permutation(len(candidates))
    else:   # the least sure first; ties in pool order
        order = np.argsort(-scores, kind="stable")
    choose = k_center_greedy if strategy == "diverse-margin" else in_order
    size = min(len(candidates), pool_factor * n)
    vectors = np.asarray(embed(candidates[order[:size]]), dtype=np.float32)
    picked = choose(vectors, n, max_similarity)
    while len(picked) < n and size < len(candidates):
        # Near-duplicates left fewer than n in the shortlist: it grows, twice as long each
        # time (only the rows it did not hold are embedded), until n are chosen or it
        # holds every candidate.
        grown = min(len(candidates), 2 * size)
        more = np.asarray(embed(candidates[order[size:grown]]), dtype=np.float32)
        vectors, size = np.concatenate([vectors, more]), grown
        picked = choose(vectors, n, max_similarity)
    shortlist = order[:size]
    return Selection(candidates[shortlist][picked], scores[shortlist][picked], size,
                     near_duplicates_left(vectors, picked, max_similarity))


def k_center_greedy(vectors: np.ndarray, n: int, max_similarity: float = MAX_SIMILARITY,
                    first: int = 0) -> np.ndarray:
    """Up to `n` rows of unit `vectors` (M, H): `first`, then each time the row whose
    cosine distance to its nearest chosen row is largest (Sener and Savarese 2018; a tie
    goes to the lower row, the less sure one in a shortlist). Rows at least
    `max_similarity` similar to a chosen one are never taken."""
    m = len(vectors)
    chosen: list[int] = []
    nearest = np.full(m, np.inf)                # (M,) distance to the nearest chosen row
    available = np.ones(m, dtype=bool)
    pick = first
    while m and len(chosen) < n:
        chosen.append(pick)
        available[pick] = False
        nearest = np.minimum(nearest, 1.0 - vectors @ vectors[pick])
        available &= nearest > 1.0 - max_similarity
        if not available.any():
            break
        pick = int(np.argmax(np.where(available, nearest, -np.inf)))
    return np.array(chosen, dtype=np.int64)


def in_order(vectors: np.ndarray, n: int, max_similarity: float = MAX_SIMILARITY
             ) -> np.ndarray:
    """The first `n` rows of `vectors` (M, H), in order, that are not near-duplicates of a
    row taken before them."""
    chosen: list[int] = []
    taken = np.empty((min(n, len(vectors)), vectors.shape[-1]), dtype=vectors.dtype)
    for row in range(len(vectors)):
        if len(chosen) == n:
            break
        if chosen and float((taken[:len(chosen)] @ vectors[row]).max()) >= max_similarity:
            continue
        taken[len(chosen)] = vectors[row]
        chosen.append(row)
    return np.array(chosen, dtype=np.int64)


def near_duplicates_left(vectors: np.ndarray, picked: np.ndarray,
                         max_similarity: float, block: int = 4096) -> int:
    """Rows not picked that are near-duplicates of a picked one (`block` rows at a time:
    memory grows with the picks, not with picks x rows)."""
    if not len(picked):
        return 0
    close = np.zeros(len(vectors), dtype=bool)
    chosen = vectors[picked]
    for start in range(0, len(vectors), block):
        close[start:start + block] = ((vectors[start:start + block] @ chosen.T).max(axis=1)
                                      >= max_similarity)
    close[picked] = False
    return int(close.sum())
