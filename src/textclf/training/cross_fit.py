"""Out-of-sample class probabilities for every example, by k-fold cross-validation.

The examples are cut into `folds` stratified folds (texts that are the same once
normalised always share a fold, so a model never sees a copy of a text it scores); for each
fold a fresh model is trained on the others with the project's own loop
(textclf.training.loop.fit, the `train` params but for the epochs) and scores the fold. Every
example thus gets exactly one row of probabilities, from a model that never saw it.

While a fold trains, each of its training examples' margin (the probability of its given
label minus the largest other) is taken at every epoch's end; averaged over the epochs and
the folds that trained on it, it is the example's area under the margin (AUM: Pleiss,
Zhang, Elenberg and Weinberger, "Identifying Mislabeled Data using the Area Under the
Margin Ranking", NeurIPS 2020, who take logits at every step; probabilities at epoch ends
here, one extra pass over the training part per epoch). A wrong label is learnt late, by
memorising it, so its margin stays low while the network learns the rest: a signal of the
training itself, beside the out-of-fold probabilities' view from outside.

Each fold starts from `model.name`, never from `model.init_from`: a warm-start folder's
weights have already seen the examples being scored. The probabilities are the model's raw
softmax, not temperature-scaled: a temperature would have to be fitted on labels, and the
only labels a fold model has not trained on are the ones being audited; confident learning
needs no calibration (its per-class thresholds absorb over- or under-confidence).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Sequence

import numpy as np

from textclf.errors import UserError
from textclf.model.batching import encode
from textclf.model.loading import attention_for, check_max_length, load_pretrained
from textclf.model.precision import LayerShape, choose_device, choose_precision
from textclf.params import ModelParams, TrainParams
from textclf.training.label_issues import normalized_margin
from textclf.training.loop import Encoded, eval_batch_size, fit, split_probabilities
from textclf.training.state import Compute


class FoldError(UserError):
    """The data cannot be cut into the folds asked for."""


@dataclasses.dataclass(frozen=True)
class CrossFit:
    """What cross-fitting gives each example."""
    probs: np.ndarray              # (N, C) from the model that never saw it
    training_margin: np.ndarray    # (N,) AUM: mean margin of its given label while trained on


@dataclasses.dataclass(frozen=True)
class FoldDone:
    """What one fold reports when it has been scored."""
    fold: int                # from 1
    folds: int
    trained_on: int
    scored: int
    accuracy: float          # of the fold's given labels, noise included
    seconds: float


def assign_folds(label_ids: np.ndarray, folds: int, seed: int,
                 groups: Sequence[str] | None = None,
                 labels: Sequence[str] | None = None) -> np.ndarray:
    """(N,) fold index (0 to folds - 1) per example: stratified by label, equal `groups`
    (e.g. normalised texts) in one fold. Every label needs at least `folds` examples."""
    from sklearn.model_selection import StratifiedGroupKFold

    label_ids = np.asarray(label_ids)
    counts = np.bincount(label_ids)
    present = np.flatnonzero(counts)
    smallest = present[counts[present].argmin()]
    if counts[smallest] < folds:
        name = labels[smallest] if labels is not None else smallest
        raise FoldError(f"label {name!r} has {counts[smallest]} example(s); {folds} folds "
                        f"need at least {folds} of each label (use fewer folds, or more data)")
    groups = np.arange(len(label_ids)) if groups is None else np.unique(groups,
                                                                        return_inverse=True)[1]
    if len(np.unique(groups)) < folds:
        raise FoldError(f"{len(np.unique(groups))} distinct text(s) cannot fill {folds} folds")
    fold_of = np.empty(len(label_ids), dtype=np.int64)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fold, (_, held_out) in enumerate(splitter.split(label_ids, label_ids, groups)):
        fold_of[held_out] = fold
    return fold_of


def cross_fit(texts: Sequence[str], label_ids: np.ndarray, labels: Sequence[str],
              model_params: ModelParams, train_params: TrainParams, fold_of: np.ndarray,
              on_fold: Callable[[FoldDone], None] = lambda done: None,
              progress: bool = False) -> CrossFit:
    """(N, C) probabilities, row i from the model trained without fold `fold_of[i]`, and
    each example's training margin from the models trained with it.

    `train_params` as `train` takes them (epochs included; seed for each fold's start);
    the fold's own examples are its validation split, so the epoch kept is the best by
    their macro-F1, as `train` keeps the best by the validation split's."""
    import transformers

    label_ids = np.asarray(label_ids, dtype=np.int64)
    device = choose_device()
    probs = np.full((len(texts), len(labels)), np.nan, dtype=np.float32)
    margin_sum, margin_count = np.zeros(len(texts)), np.zeros(len(texts))
    ids = compute = None
    folds = int(fold_of.max()) + 1
    for fold in range(folds):
        started = time.monotonic()
        transformers.set_seed(train_params.seed)
        tokenizer, model = load_pretrained(model_params.name, labels,
                                           attention_for(device, model_params.max_length))
        if ids is None:          # one tokenizer for every fold: tokenize once
            check_max_length(model_params.max_length, model, tokenizer, model_params.name)
            ids = encode(tokenizer, texts, model_params.max_length)
            shape = LayerShape.of(model.config, train_params.batch_size)
            compute = Compute(device, choose_precision(device, train_params.precision,
                                                       purpose="train", shape=shape),
                              tokenizer.pad_token_id)
        train, held_out = (_subset(ids, label_ids, fold_of != fold),
                           _subset(ids, label_ids, fold_of == fold))
        trained_on = np.flatnonzero(fold_of != fold)

        def take_margins(_, model=model, train=train, rows=trained_on) -> None:
            seen = split_probabilities(model, train, eval_batch_size(train_params), compute)
            margin_sum[rows] += normalized_margin(seen, train.labels)
            margin_count[rows] += 1

        fit(model, train, held_out, train_params, compute, on_epoch=take_margins,
            progress=progress)
        scored = split_probabilities(model, held_out, eval_batch_size(train_params), compute)
        probs[fold_of == fold] = scored
        on_fold(FoldDone(fold + 1, folds, len(train.ids), len(held_out.ids),
                         float((scored.argmax(axis=1) == held_out.labels).mean()),
                         time.monotonic() - started))
        del model
    return CrossFit(probs, margin_sum / np.maximum(margin_count, 1))


def _subset(ids: list[list[int]], label_ids: np.ndarray, mask: np.ndarray) -> Encoded:
    rows = np.flatnonzero(mask)
    return Encoded(ids=[ids[i] for i in rows], labels=label_ids[rows])
