"""The pipeline on real data: SST-5 from ../shared (skipped where it is absent)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import SST5
from textclf.data.dataset import clean_examples, label_order, read_table
from textclf.model.loading import load_pretrained
from textclf.params import TrainParams
from textclf.prepare import split_dataset
from textclf.resample import resample_by_ratio
from textclf.training.loop import encode_split, fit
from textclf.training.state import Compute

pytestmark = pytest.mark.skipif(not (SST5 / "train.csv").is_file(),
                                reason=f"SST-5 not found at {SST5}")


def test_prepare_and_short_training_on_sst5(tiny_model_dir):
    path = SST5 / "train.csv"
    frame = read_table(path, ["text", "label"])
    examples, stats = clean_examples(frame, "text", "label", None, source=str(path))
    assert stats["rows_read"] == 8544
    labels = label_order(examples["label"].unique(), None)
    assert labels == ["0", "1", "2", "3", "4"]
    splits = split_dataset(examples, labels, val_size=0.1, test_size=0.1, seed=0)
    assert sum(map(len, splits.values())) == len(examples)
    for split in splits.values():
        assert set(split["label"]) == set(labels)
    train = resample_by_ratio(splits["train"], labels, [2, 1, 1, 1, 1], seed=0)
    counts = train["label"].value_counts()
    assert abs(counts["0"] - 2 * counts["1"]) <= 2  # within one example of 2:1

    torch.manual_seed(0)
    tokenizer, model = load_pretrained(str(tiny_model_dir), labels)
    subset = train.sample(n=400, random_state=0)
    history = fit(model, encode_split(tokenizer, subset, labels, 64),
                  encode_split(tokenizer, splits["val"].iloc[:200], labels, 64),
                  TrainParams(batch_size=32, epochs=2, lr=1e-3, seed=0),
                  Compute(torch.device("cpu"), "fp32", tokenizer.pad_token_id), progress=False)
    assert len(history) == 2
    assert all(np.isfinite(r.train_loss) and 0 <= r.val_accuracy <= 1 for r in history)
