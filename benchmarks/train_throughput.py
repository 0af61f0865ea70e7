"""Training throughput: textclf's training loop against the Hugging Face Trainer.

Same model (bundled MiniLM-L6), data, batch size, max length, optimizer, schedule
and one epoch. Contenders run alternately (A B C A B C ...); prints samples/s
(median and range), the ratios, the validation accuracy each reaches, and the
share of the machine's matmul peak that training achieves.

    python benchmarks/train_throughput.py --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from _common import LABELS, machine, matmul_gflops, sst5_or_standin, summary
from textclf.model.batching import encode
from textclf.model.engines.pytorch import predict_proba
from textclf.model.loading import DEFAULT_MODEL, attention_for, load_pretrained, quiet_transformers
from textclf.model.precision import LayerShape, choose_device, choose_precision
from textclf.params import TrainParams
from textclf.training.loop import Encoded, encode_split, fit
from textclf.training.state import Compute


def run_textclf(train, val_small, args, seed=0, freeze=False):
    """As the train stage runs it: its attention kernel choice, precision and loop."""
    torch.manual_seed(seed)
    device = choose_device()
    tokenizer, model = load_pretrained(args.base_model, LABELS,
                                       attention_for(device, args.max_length))
    train_enc = encode_split(tokenizer, train, LABELS, args.max_length)
    params = TrainParams(batch_size=args.batch_size, epochs=1, lr=args.lr, warmup_ratio=0.1,
                         weight_decay=0.01, seed=seed, freeze_embeddings=freeze)
    start = time.perf_counter()
    fit(model, train_enc, val_small, params,
        Compute(device, choose_precision(device, purpose="train",
                                         shape=LayerShape.of(model.config, args.batch_size)),
                tokenizer.pad_token_id), progress=False)
    return model, tokenizer, time.perf_counter() - start


def run_trainer(train, args, best: bool, n: int, seed: int = 0, attention: str | None = None):
    """best: group_by_length + bf16 + DataCollatorWithPadding; else the text-classification
    example's default: every batch padded to max_length, random batches, fp32."""
    from transformers import (DataCollatorWithPadding, Trainer, TrainingArguments,
                              default_data_collator)

    torch.manual_seed(seed)
    tokenizer, model = load_pretrained(args.base_model, LABELS, attention)
    label_ids = {label: i for i, label in enumerate(LABELS)}
    encoded = tokenizer(train["text"].iloc[:n].tolist(), truncation=True,
                        max_length=args.max_length,
                        padding=False if best else "max_length")
    dataset = [{"input_ids": ids, "attention_mask": mask, "labels": label_ids[label]}
               for ids, mask, label in zip(encoded["input_ids"], encoded["attention_mask"],
                                           train["label"].iloc[:n])]
    with tempfile.TemporaryDirectory() as out:
        training_args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=args.batch_size, num_train_epochs=1,
            learning_rate=args.lr, weight_decay=0.01, warmup_steps=0.1,
            lr_scheduler_type="linear", max_grad_norm=1.0, bf16=best,
            train_sampling_strategy="group_by_length" if best else "random",
            use_cpu=not torch.cuda.is_available(), report_to="none", save_strategy="no",
            eval_strategy="no", logging_strategy="no", disable_tqdm=True, seed=seed,
            dataloader_num_workers=0)
        collator = DataCollatorWithPadding(tokenizer) if best else default_data_collator
        trainer = Trainer(model=model, args=training_args, train_dataset=dataset,
                          data_collator=collator)
        start = time.perf_counter()
        trainer.train()
        elapsed = time.perf_counter() - start
    return trainer.model, tokenizer, elapsed


def accuracy(model, tokenizer, dev, args) -> float:
    ids = encode(tokenizer, dev["text"].tolist(), args.max_length)
    probs = predict_proba(model.cpu(), ids, tokenizer.pad_token_id, 64, torch.device("cpu"),
                          "fp32")
    return float((probs.argmax(1) == dev["label"].astype(int).to_numpy()).mean())


def non_embedding_params(model) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if "embeddings" not in name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--default-samples", type=int, default=480,
                        help="the pad-to-max-length Trainer is slow: time it on fewer samples")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--base-model", default=DEFAULT_MODEL,
                        help="the pretrained model to fine-tune: a name or a folder")
    parser.add_argument("--save-model", type=Path, metavar="DIR",
                        help="keep textclf's model of the last round here (a Hugging Face "
                             "folder that benchmarks/inference_throughput.py --model reads)")
    args = parser.parse_args()
    quiet_transformers()

    train, dev, source = sst5_or_standin(args.samples)
    print(f"machine: {machine()}\ndata: {source}\nbatch {args.batch_size}, max_length "
          f"{args.max_length}, lr {args.lr}, 1 epoch, {args.rounds} rounds\n")
    # The share of the matmul peak is a CPU figure (matmul_gflops measures the CPU).
    on_cpu = choose_device().type == "cpu"
    peaks = {"fp32": [], "bf16": []}
    for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        if on_cpu:
            peaks[name].append(matmul_gflops(dtype, 2048, 2048, 2048))

    tokenizer, _ = load_pretrained(args.base_model, LABELS)
    val_small = Encoded(ids=encode(tokenizer, dev["text"].iloc[:32].tolist(), args.max_length),
                        labels=dev["label"].iloc[:32].astype(int).to_numpy())
    real_tokens = sum(len(ids) for ids in encode(tokenizer, train["text"].tolist(),
                                                 args.max_length))
    # trainer_best_eager: the Trainer given textclf's CPU attention kernel too, to show
    # how much of the gap that choice alone makes.
    speed = {"textclf": [], "textclf_frozen_emb": [], "trainer_best": [],
             "trainer_best_eager": [], "trainer_default": []}
    acc = {name: [] for name in speed}
    flops_per_epoch = None
    # Warm-up, not timed: first calls build oneDNN kernels and fill allocator caches.
    run_textclf(train.iloc[:64], val_small, args)
    run_trainer(train, args, best=True, n=64)
    # Round r uses seed r for every contender: the accuracy spread is seed noise.
    for round_ in range(args.rounds):
        for name in speed:
            n = len(train)
            if name.startswith("textclf"):
                model, tok, seconds = run_textclf(train, val_small, args, seed=round_,
                                                  freeze=name == "textclf_frozen_emb")
                flops_per_epoch = 6 * non_embedding_params(model) * real_tokens
            else:
                if name == "trainer_default":
                    n = min(args.default_samples, len(train))
                model, tok, seconds = run_trainer(
                    train, args, best=name.startswith("trainer_best"), n=n, seed=round_,
                    attention="eager" if name.endswith("eager") else None)
            speed[name].append(n / seconds)
            if name == "textclf" and args.save_model:
                model.save_pretrained(args.save_model)
                tok.save_pretrained(args.save_model)
            if name != "trainer_default":  # trained on a subset: its accuracy is not comparable
                acc[name].append(accuracy(model, tok, dev, args))
            print(f"round {round_ + 1}: {name:16s} {n / seconds:7.1f} samples/s"
                  + (f", dev accuracy {acc[name][-1]:.4f}" if name in acc and acc[name] and
                     name != "trainer_default" else ""), flush=True)
    for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        if on_cpu:
            peaks[name].append(matmul_gflops(dtype, 2048, 2048, 2048))

    print("\nsamples/s, median (range):")
    for name, values in speed.items():
        accs = f"   dev accuracy {summary([100 * a for a in acc[name]])} %" if acc[name] else ""
        print(f"  {name:16s} {summary(values)}{accs}")
    textclf_speed = statistics.median(speed["textclf"])
    for ours, theirs in (("textclf", "trainer_best"), ("textclf", "trainer_default"),
                         ("textclf_frozen_emb", "trainer_best"),
                         ("textclf", "trainer_best_eager")):
        ratios = [a / b for a, b in zip(speed[ours], speed[theirs])]
        print(f"  {ours} / {theirs}: {statistics.median(ratios):.2f}x "
              f"(per round {', '.join(f'{r:.2f}' for r in ratios)})")
    if not on_cpu:
        return
    achieved = flops_per_epoch / (len(train) / textclf_speed) / 1e9
    print(f"\nmatmul peak (2048^3): fp32 {summary(peaks['fp32'])} GFLOP/s, "
          f"bf16 {summary(peaks['bf16'])} GFLOP/s (before and after)")
    print(f"textclf training: {achieved:.1f} GFLOP/s (6 x non-embedding params x "
          f"{real_tokens} real tokens) = {achieved / max(peaks['fp32']):.0%} of fp32 peak, "
          f"{achieved / max(peaks['bf16']):.0%} of bf16 peak")


if __name__ == "__main__":
    main()
