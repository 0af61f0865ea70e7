"""Inference throughput: textclf's batched predict path against transformers' pipeline().

Both label the same sentences (SST-5 dev, or a stand-in) with the same model
folder, batch size 32. Contenders alternate; prints texts/s (median and range),
the ratio, prediction agreement and the accuracy of each.

    python benchmarks/inference_throughput.py --model models/classifier --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from _common import machine, sst5_or_standin, summary
from textclf.model.batching import encode
from textclf.model.engines.pytorch import predict_proba
from textclf.model.loading import load_classifier, quiet_transformers
from textclf.model.precision import choose_device, choose_precision


def run_textclf(model, tokenizer, texts, max_length, batch_size, precision):
    device = choose_device()
    start = time.perf_counter()
    ids = encode(tokenizer, texts, max_length)
    probs = predict_proba(model, ids, tokenizer.pad_token_id, batch_size, device, precision)
    return probs.argmax(1), time.perf_counter() - start


def run_pipeline(model, tokenizer, texts, max_length, batch_size):
    from transformers import pipeline

    classify = pipeline("text-classification", model=model, tokenizer=tokenizer,
                        device=choose_device())
    start = time.perf_counter()
    out = classify(texts, batch_size=batch_size, truncation=True, max_length=max_length)
    elapsed = time.perf_counter() - start
    label2id = model.config.label2id
    return np.array([label2id[o["label"]] for o in out]), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/classifier",
                        help="a model folder written by `textclf train`")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    quiet_transformers()

    _, dev, source = sst5_or_standin(0)
    texts = dev["text"].tolist()
    gold = dev["label"].astype(int).to_numpy()
    model, tokenizer, info = load_classifier(args.model, choose_device())
    model.to(choose_device())
    # pipeline() gets the model with transformers' default attention kernel (SDPA):
    # textclf's CPU choice (eager) would slow its unsorted, longer batches.
    default_model, _, _ = load_classifier(args.model)
    max_length = info.max_length
    auto = choose_precision(choose_device())
    print(f"machine: {machine()}\ndata: {source}\nmodel: {args.model} "
          f"(labels {info.labels}), batch {args.batch_size}, {args.rounds} rounds\n")

    contenders = {
        "pipeline": lambda: run_pipeline(default_model, tokenizer, texts, max_length,
                                         args.batch_size),
        "textclf_fp32": lambda: run_textclf(model, tokenizer, texts, max_length,
                                            args.batch_size, "fp32"),
        f"textclf_{auto}": lambda: run_textclf(model, tokenizer, texts, max_length,
                                               args.batch_size, auto),
    }
    speed = {name: [] for name in contenders}
    predictions = {}
    run_pipeline(default_model, tokenizer, texts[:64], max_length, args.batch_size)  # warm-up
    for round_ in range(args.rounds):
        for name, run in contenders.items():
            predicted, seconds = run()
            speed[name].append(len(texts) / seconds)
            predictions[name] = predicted
        print(f"round {round_ + 1}: " + ", ".join(f"{n} {v[-1]:.1f}" for n, v in speed.items())
              + " texts/s", flush=True)

    print("\ntexts/s, median (range); accuracy on the gold labels; agreement with pipeline:")
    for name, values in speed.items():
        agree = (predictions[name] == predictions["pipeline"]).mean()
        accuracy = (predictions[name] == gold).mean()
        print(f"  {name:14s} {summary(values):24s} accuracy {accuracy:.2%}  "
              f"agreement {agree:.2%}")
    for name in contenders:
        if name != "pipeline":
            ratios = [a / b for a, b in zip(speed[name], speed["pipeline"])]
            print(f"  {name} / pipeline: {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
