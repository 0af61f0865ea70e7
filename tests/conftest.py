"""Shared fixtures: a tiny random transformer built from a config (no download)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

# Nothing may come from a model hub in tests (and a blocked network would only
# time out slowly); set before transformers / huggingface_hub are imported.
os.environ["HF_HUB_OFFLINE"] = "1"

# Re-exported: tests import these from conftest or from harness.
from harness import (GIT_IDENTITY, REPO, ReadmeWalk, copy_project, run,  # noqa: E402,F401
                     set_params, walk_readme)

SST5 = REPO.parent / "shared" / "data" / "sst5"
LABELS = ["very negative", "negative", "neutral", "positive", "very positive"]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer, hidden-size-32 BERT with random weights and the bundled tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification
    import torch

    from textclf.modeling import bundled_model_dir

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(bundled_model_dir())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=128, num_labels=3)
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def toy_reviews(per_class: int = 30) -> pd.DataFrame:
    """Small labelled texts whose words give the label away, so a tiny model learns."""
    cue = {"very negative": "awful dreadful", "negative": "poor weak",
           "neutral": "okay average", "positive": "good nice", "very positive": "superb brilliant"}
    rows = [{"text": f"review {i}: the {thing} was {cue[label]}", "label": label}
            for label in LABELS for i, thing in
            zip(range(per_class), ["food", "room", "film", "phone", "book", "app"] * per_class)]
    return pd.DataFrame(rows)


@pytest.fixture
def project(tmp_path) -> Path:
    """A copy of the repository as a fresh git repository in tmp_path."""
    return copy_project(tmp_path / "project")


@pytest.fixture(scope="session")
def readme_walk(tmp_path_factory, tiny_model_dir) -> ReadmeWalk:
    """The README's main command, tour, own-data and sweep sections, run once in order in
    one project with the tiny model; test_readme checks each claim, test_sweep goes on."""
    return walk_readme(tmp_path_factory.mktemp("readme"), tiny_model_dir)
