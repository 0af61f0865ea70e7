"""Start training from a model written by `train` (`model.init_from`), growing its head
when the data brings new classes.

Old classes keep their label ids and their learned head rows; new classes are appended
after them with freshly initialised rows. A class the old model knows but the new data
lacks is an error: dropping it would silently renumber every later class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from textclf.errors import UserError
from textclf.model.loading import load_classifier


def warm_start_labels(old: Sequence[str], new: Sequence[str], source: str) -> list[str]:
    """Label order for the continued model: the old labels in their order, then new ones."""
    dropped = [label for label in old if label not in set(new)]
    if dropped:
        raise UserError(f"model.init_from {source}: the model knows label(s) "
                        f"{', '.join(map(repr, dropped))} that the new data lacks "
                        f"(data labels: {list(new)}); expected the new labels to include "
                        f"all of {list(old)}: add examples of those classes, or train from "
                        f"the base model with model.init_from: null")
    return list(old) + [label for label in new if label not in set(old)]


def grow_head(model: torch.nn.Module, old_state: dict[str, torch.Tensor],
              old_count: int) -> list[str]:
    """Copy the old head's rows (one per old label) into `model`'s larger head, in place.

    The head's tensors are found as those whose first dimension went from `old_count` to
    the model's label count, which holds for every Hugging Face classification head.
    Returns the names of the tensors copied.
    """
    new_count = model.config.num_labels
    copied = []
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            old = old_state.get(name)
            if (old is not None and old.shape != tensor.shape and old.shape[0] == old_count
                    and tensor.shape[0] == new_count and old.shape[1:] == tensor.shape[1:]):
                tensor[:old_count].copy_(old)
                copied.append(name)
    if not copied:
        raise UserError(f"cannot grow the classification head from {old_count} to "
                        f"{new_count} labels: no head weights of {old_count} rows found")
    return copied


def load_warm_start(folder: str | Path, labels: Sequence[str], attention: str | None):
    """(tokenizer, model, label order) continuing from the model in `folder`."""
    from transformers import AutoModelForSequenceClassification

    old_model, tokenizer, info = load_classifier(folder)
    order = warm_start_labels(info.labels, labels, str(folder))
    if order == info.labels:
        model = AutoModelForSequenceClassification.from_pretrained(
            folder, attn_implementation=attention)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(
            folder, num_labels=len(order), id2label=dict(enumerate(order)),
            label2id={label: i for i, label in enumerate(order)},
            ignore_mismatched_sizes=True, attn_implementation=attention)
        grow_head(model, old_model.state_dict(), len(info.labels))
    model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, model, order
