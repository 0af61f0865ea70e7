"""What dropout costs a CPU training step, and what textclf.training.dropout gives back.

One MiniLM training step (bf16 autocast where `precision: auto` picks it, else fp32; batch
32 x 48 tokens, fused AdamW) in four copies of the same model, stepped in turn each round:
PyTorch's dropout everywhere; the cheaper mask in the `nn.Dropout` modules only; the cheaper
mask in the modules and the attention probabilities (what `train` uses on a CPU); dropout
off (the floor). Prints ms per step, median and range over rounds.

    python benchmarks/dropout_cost.py --rounds 8
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from _common import machine, summary
from textclf.model.engines.pytorch import autocast
from textclf.model.loading import DEFAULT_MODEL, load_pretrained, quiet_transformers
from textclf.model.precision import choose_precision
from textclf.training import dropout as fast_dropout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4, help="steps per model per round")
    parser.add_argument("--tokens", type=int, default=48)
    args = parser.parse_args()
    quiet_transformers()
    device = torch.device("cpu")
    precision = choose_precision(device, purpose="train")
    print(f"machine: {machine()}\nprecision: {precision}; batch 32 x {args.tokens} tokens\n")

    _, base = load_pretrained(DEFAULT_MODEL, list("abcde"), "eager")
    models = {"PyTorch dropout": base,
              "cheaper mask, nn.Dropout modules only": copy.deepcopy(base),
              "cheaper mask, modules + attention (train's choice)": copy.deepcopy(base),
              "dropout off (floor)": copy.deepcopy(base)}
    fast_dropout.install(models["cheaper mask, nn.Dropout modules only"], attention=False)
    fast_dropout.install(models["cheaper mask, modules + attention (train's choice)"])
    for module in models["dropout off (floor)"].modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    torch.manual_seed(0)
    ids = torch.randint(1000, 20000, (32, args.tokens))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
             "labels": torch.randint(0, 5, (32,))}
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-5, fused=True)
                  for name, m in models.items()}

    def step(name: str) -> None:
        models[name].train()
        with autocast(device, precision):
            loss = models[name](**batch).loss
        loss.backward()
        optimizers[name].step()
        optimizers[name].zero_grad()

    for name in models:          # warm-up: kernels, allocator
        step(name)
        step(name)
    ms = {name: [] for name in models}
    for _ in range(args.rounds):
        for name in models:
            start = time.perf_counter()
            for _ in range(args.steps):
                step(name)
            ms[name].append((time.perf_counter() - start) / args.steps * 1e3)
    base_ms = statistics.median(ms["PyTorch dropout"])
    print("| model | ms per step, median (range) | speed vs PyTorch dropout |\n| --- | --- | --- |")
    for name, values in ms.items():
        print(f"| {name} | {summary(values)} | {base_ms / statistics.median(values):.2f}x |")


if __name__ == "__main__":
    main()
