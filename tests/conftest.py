"""Shared fixtures: a tiny random transformer built from a config (no download)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

# Nothing may come from a model hub in tests (and a blocked network would only
# time out slowly); set before transformers / huggingface_hub are imported.
os.environ["HF_HUB_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parents[1]
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
    dest = tmp_path / "project"
    ignore = shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.egg-info", ".pytest_cache",
                                    "cache", "tmp", "config.local", "prepared", "resampled",
                                    "classifier")
    shutil.copytree(REPO, dest, ignore=ignore)
    run(["git", "init", "-q"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "copy"], dest)
    return dest


def set_params(project: Path, **sections) -> None:
    """Update sections of a project's params.yaml, e.g. train={"epochs": 1}."""
    import yaml

    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in sections.items():
        params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


# DVC experiments make git commits: give them an identity on machines without one.
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "textclf tests", "GIT_AUTHOR_EMAIL": "tests@example.invalid",
                "GIT_COMMITTER_NAME": "textclf tests",
                "GIT_COMMITTER_EMAIL": "tests@example.invalid"}


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command (dvc, git, textclf) in `cwd`; fail the test with its output if it fails."""
    env = {**os.environ, **GIT_IDENTITY, "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result
