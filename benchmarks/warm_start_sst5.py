"""A new class by warm start against training every class from scratch, on SST-5.

Route "warm": train on 4 of the 5 classes (label 4 held out), then continue from that
model on all 5 classes with `model.init_from` (textclf.training.warm_start grows the head).
Route "scratch": train on all 5 classes from the pretrained base.
Both are scored on the SST-5 dev sentences; wall times count training only.

    OMP_NUM_THREADS=2 python benchmarks/warm_start_sst5.py --epochs 1 --train-size 4000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import LABELS, SST5, machine, sst5_or_standin
from textclf.metrics import classification_metrics
from textclf.model.engines.pytorch import predict_proba
from textclf.model.folder import TrainingInfo
from textclf.model.loading import (DEFAULT_MODEL, load_pretrained, quiet_transformers,
                                   save_classifier)
from textclf.params import TrainParams
from textclf.training.loop import encode_split, fit
from textclf.training.state import Compute
from textclf.training.warm_start import load_warm_start

CPU = torch.device("cpu")
MAX_LENGTH = 64


def train(tokenizer, model, frame, labels, params) -> float:
    start = time.perf_counter()
    data = encode_split(tokenizer, frame, labels, MAX_LENGTH)
    fit(model, data, data, params, Compute(CPU, "fp32", tokenizer.pad_token_id), progress=False)
    return time.perf_counter() - start


def score(tokenizer, model, dev, labels) -> dict[str, float]:
    ids = encode_split(tokenizer, dev, labels, MAX_LENGTH).ids
    probs = predict_proba(model, ids, tokenizer.pad_token_id, 128, CPU, "fp32")
    scores = classification_metrics(dev["label"].tolist(),
                                    [labels[i] for i in probs.argmax(1)], labels)
    return {"accuracy": scores["accuracy"], "f1_macro": scores["f1_macro"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=1, help="epochs of each training")
    parser.add_argument("--train-size", type=int, default=4000, help="SST-5 training sentences")
    args = parser.parse_args()
    quiet_transformers()
    train_frame, dev, source = sst5_or_standin(args.train_size)
    params = TrainParams(batch_size=32, epochs=args.epochs, lr=1e-4, seed=0)
    old_labels = LABELS[:4]
    print(f"{machine()}\ndata: {source}; {args.epochs} epoch(s) per training, fp32\n")

    torch.manual_seed(0)
    tokenizer, model = load_pretrained(DEFAULT_MODEL, LABELS)
    scratch_s = train(tokenizer, model, train_frame, LABELS, params)
    scratch = score(tokenizer, model, dev, LABELS)

    torch.manual_seed(0)
    tokenizer, model = load_pretrained(DEFAULT_MODEL, old_labels)
    four = train_frame[train_frame["label"].isin(old_labels)]
    first_s = train(tokenizer, model, four, old_labels, params)
    with tempfile.TemporaryDirectory() as folder:
        save_classifier(model, tokenizer, Path(folder),
                        TrainingInfo(labels=old_labels, max_length=MAX_LENGTH,
                                     base_model=DEFAULT_MODEL))
        tokenizer, grown, order = load_warm_start(folder, LABELS, None)
    second_s = train(tokenizer, grown, train_frame, order, params)
    warm = score(tokenizer, grown, dev, order)

    print("| route | dev accuracy | dev macro-F1 | training wall time |")
    print("| --- | --- | --- | --- |")
    print(f"| scratch, 5 classes | {scratch['accuracy']:.4f} | {scratch['f1_macro']:.4f} | "
          f"{scratch_s:.0f} s |")
    print(f"| 4 classes, then +1 by warm start | {warm['accuracy']:.4f} | "
          f"{warm['f1_macro']:.4f} | {first_s:.0f} s + {second_s:.0f} s |")
    if not (SST5 / "train.csv").is_file():
        print("(SST-5 not found: the scores above mean nothing)")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
