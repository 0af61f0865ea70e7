"""The model folder's README.md: a Hugging Face model card written beside the weights."""

from __future__ import annotations

import json

import yaml

from textclf.model.folder import TrainingInfo


def model_card(info: TrainingInfo, validation: dict[str, float]) -> str:
    """Markdown with Hugging Face's YAML metadata block (labels, metrics, params, data)."""
    metadata = {"library_name": "transformers", "pipeline_tag": "text-classification",
                "tags": ["textclf", "dvc"]}
    if "/" in info.base_model and not info.base_model.startswith(("/", ".")):
        metadata["base_model"] = info.base_model
    params = yaml.safe_dump(info.params, sort_keys=False).strip()
    data = "\n".join(f"- `{path}`: sha256 `{digest}`"
                     for path, digest in info.data_sha256.items()) or "- (not recorded)"
    scores = "\n".join(f"| {name} | {value:.4f} |" for name, value in validation.items())
    return f"""---
{yaml.safe_dump(metadata, sort_keys=False).strip()}
---

# Text classifier

Fine-tuned from `{info.base_model}` by [textclf](https://dvc.org) (`textclf train`) to put a
text in one of {len(info.labels)} classes: {", ".join(f"`{label}`" for label in info.labels)}
(label ids 0 to {len(info.labels) - 1}, in that order). Texts are cut to {info.max_length} tokens.

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
