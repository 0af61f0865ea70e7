"""The model folder's README.md: a Hugging Face model card written beside the weights."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

import yaml

from textclf.model.folder import TrainingInfo


@dataclass(frozen=True)
class WarmStartLabels:
    """Where a model continued from an earlier model folder (`model.init_from`) got its
    labels."""
    folder: str              # model.init_from
    old_labels: list[str]    # that model's labels, by its label ids
    dropped: list[str]       # those removed (model.drop_labels)


def model_card(info: TrainingInfo, validation: dict[str, float],
               warm_start: Optional[WarmStartLabels] = None) -> str:
    """Markdown with Hugging Face's YAML metadata block (labels, metrics, params, data)."""
    metadata = {"library_name": "transformers", "pipeline_tag": "text-classification",
                "tags": ["textclf", "dvc"]}
    # A Hugging Face id (a warm start's base_model is a folder such as models/v1).
    if (warm_start is None and "/" in info.base_model
            and not info.base_model.startswith(("/", "."))):
        metadata["base_model"] = info.base_model
    params = yaml.safe_dump(info.params, sort_keys=False).strip()
    data = "\n".join(f"- `{path}`: sha256 `{digest}`"
                     for path, digest in info.data_sha256.items()) or "- (not recorded)"
    scores = "\n".join(f"| {name} | {value:.4f} |" for name, value in validation.items())
    return f"""---
{yaml.safe_dump(metadata, sort_keys=False).strip()}
---

# Text classifier

Fine-tuned from `{info.base_model}` by `textclf train` (a [DVC](https://dvc.org) pipeline) to put a
text in one of {len(info.labels)} classes: {", ".join(f"`{label}`" for label in info.labels)}
(label ids 0 to {len(info.labels) - 1}, in that order). Texts are cut to {info.max_length} tokens.
{_warm_start_section(info.labels, warm_start)}
## Use

```bash
textclf predict --model <this folder> "some text"
```

or, with transformers alone (`truncation=True` cuts texts where training did):
`pipeline("text-classification", model="<this folder>")(texts, truncation=True)`.

## Validation scores (best epoch {info.best_epoch})

| metric | value |
| --- | --- |
{scores}

Test scores are in the project's `metrics/evaluate/metrics.json`, from the `evaluate` stage.

## Training

```yaml
{params}
```

Data (the splits it was trained and validated on):
{data}

Versions: {json.dumps(info.versions)}; precision {info.precision}.

## Intended use and limits

Made for texts like its training data. Its scores hold for that data only: texts from
another domain, language or time can score much lower, and it always answers one of its
known classes, even for text that fits none. Watch what it sees with `textclf drift`, and
check its mistakes (`metrics/evaluate/misclassified.csv`) before relying on it.
"""


def _warm_start_section(labels: list[str], warm_start: Optional[WarmStartLabels]) -> str:
    if warm_start is None:
        return ""
    old = warm_start.old_labels
    kept = [f"`{label}` (id {i}, was {old.index(label)})"
            for i, label in enumerate(labels) if label in old]
    added = [f"`{label}` (id {i})" for i, label in enumerate(labels) if label not in old]
    return f"""
## Labels carried over

Continued from the model in `{warm_start.folder}` (`model.init_from`), whose labels were
{_names(old)}.

- Dropped (`model.drop_labels`), with their head rows: {_names(warm_start.dropped)}.
- Kept, with their learned head rows, in their old order: {", ".join(kept) or "none"}.
- Added, with freshly initialised head rows: {", ".join(added) or "none"}.
"""


def _names(labels: list[str]) -> str:
    return ", ".join(f"`{label}`" for label in labels) or "none"
