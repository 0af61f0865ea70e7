"""Start training from a model written by `train` (`model.init_from`), reshaping its head
to the new data's labels.

Old classes keep their learned head rows and their order; new classes are appended after
them with freshly initialised rows. A class listed in `model.drop_labels` loses its rows
and the old classes after it move up (old ids are remapped densely). A class the old model
knows but the new data lacks, and that is not listed, is an error: dropping it unasked
would silently renumber every later class.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch

from textclf.errors import UserError
from textclf.model.loading import load_classifier


@dataclass(frozen=True)
class LabelChange:
    """How the continued model's labels relate to the old model's."""
    source: str          # the model.init_from folder
    old: list[str]       # the old model's labels, by old id
    order: list[str]     # the continued model's labels, by new id: kept ones, then added
    dropped: list[str]   # old labels removed (model.drop_labels), in old order

    @property
    def added(self) -> list[str]:
        return [label for label in self.order if label not in self.old]

    def remap(self) -> dict[int, int]:
        """Old label id -> new label id, for every kept label, in old (= new) order."""
        kept = [label for label in self.old if label not in self.dropped]
        return {self.old.index(label): new_id for new_id, label in enumerate(kept)}


def plan_labels(old: Sequence[str], new: Sequence[str], source: str,
                drop: Sequence[str] = (), counts: Mapping[str, int] | None = None
                ) -> LabelChange:
    """The continued model's labels: the old ones in their order less `drop`, then the new
    data's other labels. `counts` (examples per label in the new data) go into the error
    for a dropped label the data still has."""
    unknown = [label for label in drop if label not in old]
    if unknown:
        raise UserError(f"model.drop_labels lists {', '.join(map(repr, unknown))}, which "
                        f"the model in {source} does not know (its labels: {list(old)}); "
                        f"expected only labels of that model")
    present = [label for label in drop if label in new]
    if present:
        label = present[0]
        found = (f"{counts.get(label, 0)} examples of it in the train and validation "
                 f"splits" if counts is not None else "it among its labels")
        raise UserError(f"model.drop_labels: {label!r} is dropped from the model in {source}, "
                        f"but the new data has {found}; expected data without it: remove "
                        f"those rows (and the label from data.labels), or take {label!r} out "
                        f"of model.drop_labels to keep the class")
    kept = [label for label in old if label not in drop]
    missing = [label for label in kept if label not in new]
    if missing:
        raise UserError(f"model.init_from {source}: the model knows label(s) "
                        f"{', '.join(map(repr, missing))} that the new data lacks "
                        f"(data labels: {list(new)}); expected the new labels to include "
                        f"all of {kept}: add examples of those classes, list them in "
                        f"model.drop_labels to remove them from the model, or train from "
                        f"the base model with model.init_from: null")
    return LabelChange(source=source, old=list(old),
                       order=kept + [label for label in new if label not in old],
                       dropped=[label for label in old if label in drop])


def label_row_names(model: torch.nn.Module) -> list[str]:
    """Names of `model`'s tensors with one row per label (the head's output layer).

    They are found as the tensors whose shape changes with the label count, on a copy of the
    architecture with one more label built on the meta device (shapes only, no memory);
    a shape test alone would also take BERT's token_type_embeddings for a 2-label head.
    """
    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(model.config)
    config.num_labels = model.config.num_labels + 1
    with torch.device("meta"):
        probe = AutoModelForSequenceClassification.from_config(config)
    shapes = {name: tensor.shape for name, tensor in probe.state_dict().items()}
    names = [name for name, tensor in model.state_dict().items()
             if shapes.get(name) != tensor.shape]
    if not names:
        raise UserError(f"cannot reshape the classification head of {config.model_type}: no "
                        f"weights with one row per label found")
    return names


def reshaped_state(old_state: Mapping[str, torch.Tensor], fresh_state: Mapping[str, torch.Tensor],
                   rows: Sequence[str], change: LabelChange) -> dict[str, torch.Tensor]:
    """The continued model's weights: the old model's, except each tensor named in `rows`,
    which is the fresh model's with its first rows replaced by the kept labels' old rows
    (new row i = old row j for each j -> i of `change.remap()`); the rows after them, the
    added labels', stay freshly initialised."""
    remap = change.remap()
    old_ids = torch.tensor(list(remap), dtype=torch.long)
    state = dict(old_state)
    for name in rows:
        tensor = fresh_state[name].detach().clone()     # (new label count, ...)
        tensor[:len(remap)] = old_state[name][old_ids]  # (kept label count, ...)
        state[name] = tensor
    return state


def start_from(folder: str | Path, labels: Sequence[str], attention: str | None,
               drop: Sequence[str] = (), counts: Mapping[str, int] | None = None):
    """(tokenizer, model, LabelChange) continuing from the model in `folder` on data with
    `labels`, less the old labels in `drop`."""
    from transformers import AutoModelForSequenceClassification

    old_model, tokenizer, info = load_classifier(folder)
    change = plan_labels(info.labels, labels, str(folder), drop, counts)
    if change.order == info.labels:
        model = AutoModelForSequenceClassification.from_pretrained(
            folder, attn_implementation=attention)
    else:
        config = copy.deepcopy(old_model.config)
        config.num_labels = len(change.order)
        config.id2label = dict(enumerate(change.order))
        config.label2id = {label: i for i, label in enumerate(change.order)}
        # Every weight fresh, then the old ones loaded over it: from_pretrained's
        # ignore_mismatched_sizes gives fresh rows only when the label count changes, and
        # dropping one label while adding another keeps it.
        model = AutoModelForSequenceClassification.from_config(
            config, attn_implementation=attention)
        model.load_state_dict(reshaped_state(old_model.state_dict(), model.state_dict(),
                                             label_row_names(old_model), change))
    model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, model, change


def load_warm_start(folder: str | Path, labels: Sequence[str], attention: str | None):
    """(tokenizer, model, label order): `start_from` dropping no label."""
    tokenizer, model, change = start_from(folder, labels, attention)
    return tokenizer, model, change.order
