"""Does `textclf select` choose better texts to label than chance? A simulated labelling study.

The pool is SST-5's training split (8,544 sentences), its labels hidden until a sentence is
chosen. Each seed starts from the same 500 random labelled sentences for every strategy,
trains the bundled MiniLM on them, then runs `--rounds` rounds: choose `--batch`
sentences with the strategy (textclf.monitoring.selection, as `textclf select` does),
reveal their labels, train again, score SST-5 dev (macro-F1). Strategies (`--strategies`,
the last is the baseline): diverse-margin and random.

Each round trains from the pretrained base on every label so far (`--mode retrain`), or
continues from the previous round's model for `--warm-epochs` (`--mode warm`); the last
epoch's weights are kept (no validation split is held out: dev only scores). Uncertainty is
on calibrated probabilities: the temperature is fitted on the previous model's dev
probabilities (one number; it changes no prediction, so no dev score), as `textclf train`
fits it on its validation split. Sentences are embedded in the same forward pass.

    OMP_NUM_THREADS=2 python benchmarks/active_learning.py --seeds 0 1 2 --json al.json

Seeds run one after another in one process, and torch's random state (dropout) carries on
from one training to the next: `--seeds 0 1` gives the figures in benchmarks/README.md,
`--seeds 1` alone does not. Exits with a message (code 0) when SST-5 is absent.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from _common import LABELS, SST5, machine
from textclf.canonical import canonical_text
from textclf.metrics import macro_f1
from textclf.model.calibration import fit_temperature
from textclf.model.embeddings import probabilities_and_embeddings
from textclf.model.loading import DEFAULT_MODEL, load_pretrained, quiet_transformers
from textclf.model.precision import choose_device, choose_precision
from textclf.monitoring.selection import select, unseen_rows
from textclf.params import TrainParams
from textclf.training.loop import Encoded, encode_split, run_epochs
from textclf.training.state import Compute, new_state

CPU = torch.device("cpu")
MAX_LENGTH = 64
BATCH = 128          # inference batch


class Study:
    """The pool (SST-5 train, token ids once), dev, and how a round trains."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        pool = pd.read_csv(SST5 / "train.csv")
        dev = pd.read_csv(SST5 / "dev.csv")
        for frame in (pool, dev):
            frame["label"] = frame["label"].astype(str)
        self.tokenizer, _ = load_pretrained(args.base_model, LABELS, "eager")
        self.pool_texts = pool["text"].tolist()
        self.pool = encode_split(self.tokenizer, pool, LABELS, MAX_LENGTH)
        self.dev = encode_split(self.tokenizer, dev, LABELS, MAX_LENGTH)
        # The CPU runs fp32, the figures in benchmarks/README.md; `--device auto` takes a GPU
        # where there is one, in the precision `textclf train` would use there (bf16 on CUDA).
        device = CPU if args.device == "cpu" else choose_device()
        self.compute = Compute(device, "fp32" if device == CPU else choose_precision(device),
                               self.tokenizer.pad_token_id)

    def train(self, rows: np.ndarray, seed: int, start=None):
        """A model trained on pool `rows`: from the base, or on from `start` (warm)."""
        args = self.args
        if start is None:
            torch.manual_seed(seed)
            _, model = load_pretrained(args.base_model, LABELS, "eager")
            epochs = args.epochs
        else:
            model, epochs = copy.deepcopy(start), args.warm_epochs
        data = Encoded([self.pool.ids[i] for i in rows], self.pool.labels[rows])
        # run_epochs validates every epoch; 8 rows keep that free (the last epoch is kept).
        params = TrainParams(batch_size=16, epochs=epochs, lr=args.lr, seed=seed,
                             precision=self.compute.precision)
        state = new_state(model, params, len(data.ids), self.compute)
        run_epochs(state, data, Encoded(data.ids[:8], data.labels[:8]), params,
                   self.compute, progress=False)
        return model.eval()

    def score(self, model) -> tuple[float, np.ndarray]:
        """(dev macro-F1, dev probabilities (N, C))."""
        probs, _ = probabilities_and_embeddings(model, self.dev.ids, self.compute.pad_id,
                                                BATCH, self.compute.device,
                                                self.compute.precision)
        return macro_f1(self.dev.labels, probs.argmax(axis=1), range(len(LABELS))), probs

    def choose(self, strategy: str, model, labelled: np.ndarray, dev_probs: np.ndarray,
               seed: int) -> np.ndarray:
        """`--batch` pool rows by `strategy`, among the sentences not labelled yet."""
        seen = {canonical_text(self.pool_texts[i]) for i in labelled}
        candidates = unseen_rows(self.pool_texts, seen)
        probs = np.full((len(self.pool_texts), len(LABELS)), 1 / len(LABELS), np.float32)
        vectors = np.zeros((len(self.pool_texts), model.config.hidden_size), np.float32)
        # random needs no probabilities: it embeds only its shortlist (near-duplicates).
        rows = candidates if strategy != "random" else np.random.default_rng(seed).permutation(
            candidates)[:self.args.pool_factor * self.args.batch]
        found, found_vectors = probabilities_and_embeddings(
            model, [self.pool.ids[i] for i in rows], self.compute.pad_id, BATCH,
            self.compute.device, self.compute.precision)
        probs[rows] = fit_temperature(dev_probs, self.dev.labels).apply(found)
        vectors[rows] = found_vectors
        chosen = select(probs, self.args.batch, strategy, lambda r: vectors[r],
                        candidates=rows if strategy == "random" else candidates,
                        pool_factor=self.args.pool_factor, seed=seed)
        return chosen.rows


def run_seed(study: Study, seed: int, strategies: list[str], say) -> dict:
    """{strategy: [dev macro-F1 at 500, 750, ...]} and seconds per strategy, one seed."""
    args = study.args
    start = np.random.default_rng(seed).choice(len(study.pool_texts), args.start,
                                               replace=False)
    began = time.perf_counter()
    first = study.train(start, seed)
    first_f1, first_probs = study.score(first)
    say(f"seed {seed}: {args.start} labels, macro-F1 {first_f1:.4f} "
        f"({time.perf_counter() - began:.0f} s)")
    result = {"seed": seed, "start_seconds": time.perf_counter() - began}
    for strategy in strategies:
        began = time.perf_counter()
        labelled, model, probs, scores = start, first, first_probs, [first_f1]
        for round_ in range(1, args.rounds + 1):
            chosen = study.choose(strategy, model, labelled, probs, seed * 1000 + round_)
            labelled = np.concatenate([labelled, chosen])
            model = study.train(labelled, seed, start=model if args.mode == "warm" else None)
            f1, probs = study.score(model)
            scores.append(f1)
            say(f"seed {seed}, {strategy}: {len(labelled)} labels, macro-F1 {f1:.4f} "
                f"({time.perf_counter() - began:.0f} s)")
        result[strategy] = scores
        result[f"{strategy}_seconds"] = time.perf_counter() - began
    return result


def table(results: list[dict], strategies: list[str], sizes: list[int]) -> str:
    """Markdown: dev macro-F1 (%) per labelled size: mean, then each seed, per strategy."""
    seeds = [r["seed"] for r in results]
    head = " | ".join(f"{s} mean | {s} per seed ({', '.join(map(str, seeds))})"
                      for s in strategies)
    lines = [f"| labels | {head} | gap (mean) |",
             "| ---: |" + " ---: | --- |" * len(strategies) + " ---: |"]
    for i, size in enumerate(sizes):
        cells, means = [], []
        for s in strategies:
            values = [100 * r[s][i] for r in results]
            means.append(statistics.mean(values))
            cells.append(f"{means[-1]:.2f} | {', '.join(f'{v:.2f}' for v in values)}")
        lines.append(f"| {size:,} | {' | '.join(cells)} | {means[0] - means[-1]:+.2f} |")
    return "\n".join(lines)


def near_duplicates(folder: Path, count: int = 400, seed: int = 0) -> None:
    """How alike a model's embeddings make distinct texts, against one-edit copies: the
    evidence for select's --max-similarity default. The first `count` SST-5 dev sentences:
    every pair of them, and each with one edit (a word dropped or repeated, the first
    word upper-cased, or " !" added)."""
    import random

    from textclf.model.embeddings import sentence_embeddings
    from textclf.model.loading import load_classifier

    rng = random.Random(seed)

    def edited(text: str) -> str:
        words = text.split()
        kind, at = rng.choice(["drop", "upper", "mark", "repeat"]), rng.randrange(len(words))
        if kind == "drop" and len(words) > 3:
            del words[at]
        elif kind == "upper":
            words[0] = words[0].upper()
        elif kind == "mark":
            words.append("!")
        else:
            words.insert(at, words[at])
        return " ".join(words)

    texts = pd.read_csv(SST5 / "dev.csv")["text"].tolist()[:count]
    model, tokenizer, info = load_classifier(folder)
    plain = sentence_embeddings(model, tokenizer, texts, info.max_length)
    copies = sentence_embeddings(model, tokenizer, [edited(t) for t in texts], info.max_length)
    pairs = (plain @ plain.T)[np.triu_indices(count, 1)]
    same = (plain * copies).sum(axis=1)
    print(f"{machine()}\n{folder}: {len(pairs):,} pairs of distinct SST-5 dev sentences, "
          f"{count} one-edit copies\n\n| cosine at least | distinct pairs | one-edit copies |"
          f"\n| ---: | ---: | ---: |")
    for threshold in (0.9, 0.95, 0.97, 0.98, 0.99):
        print(f"| {threshold} | {(pairs >= threshold).mean():.3%} "
              f"({int((pairs >= threshold).sum()):,}) | "
              f"{(same >= threshold).mean():.1%} |")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--strategies", nargs="+", default=["diverse-margin", "random"],
                        help="the last one is the baseline the gap is measured against")
    parser.add_argument("--start", type=int, default=500, help="random labels to start from")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batch", type=int, default=250, help="labels chosen per round")
    parser.add_argument("--pool-factor", type=int, default=5,
                        help="shortlist size as a multiple of --batch (`select --pool-factor`)")
    parser.add_argument("--mode", choices=["retrain", "warm"], default="warm")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of a training from base")
    parser.add_argument("--warm-epochs", type=int, default=1,
                        help="epochs of a warm-started round (--mode warm)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--base-model", default=DEFAULT_MODEL,
                        help="the pretrained model every round starts from: a name or a folder")
    parser.add_argument("--device", choices=["cpu", "auto"], default="cpu",
                        help="auto: a GPU where there is one (bf16 on CUDA)")
    parser.add_argument("--json", type=Path, help="write every seed's figures here as it ends")
    parser.add_argument("--near-duplicates", type=Path, metavar="MODEL",
                        help="instead of the study: how alike this model folder's embeddings "
                             "make distinct SST-5 sentences and one-edit copies")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if not (SST5 / "train.csv").is_file() or not (SST5 / "dev.csv").is_file():
        print(f"active_learning: skipped: SST-5 not found at {SST5} (train.csv, dev.csv); "
              f"this study needs its labels")
        return
    quiet_transformers()
    if args.near_duplicates:
        near_duplicates(args.near_duplicates)
        return
    began = time.perf_counter()

    def say(line: str) -> None:
        print(f"[{time.perf_counter() - began:6.0f} s] {line}", flush=True)

    study = Study(args)
    rounds = (f"then {args.warm_epochs} per round from the last model" if args.mode == "warm"
              else "every round")
    header = (f"{machine()}\nSST-5: pool {len(study.pool_texts)} train sentences, dev "
              f"{len(study.dev.ids)}; start {args.start}, {args.rounds} rounds of "
              f"{args.batch}; mode {args.mode} ({args.epochs} epochs from base, {rounds}), "
              f"lr {args.lr}, batch 16, max length {MAX_LENGTH}, {study.compute.precision} on "
              f"{study.compute.device.type}; pool factor "
              f"{args.pool_factor}")
    print(header, flush=True)
    results = []
    for seed in args.seeds:
        results.append(run_seed(study, seed, args.strategies, say))
        if args.json:
            args.json.write_text(json.dumps({"setup": header, "results": results}, indent=1))
    sizes = [args.start + args.batch * r for r in range(args.rounds + 1)]
    print(f"\n{header}\n\nDev macro-F1 (%):\n\n{table(results, args.strategies, sizes)}")
    start = statistics.mean(r["start_seconds"] for r in results)
    for s in args.strategies:
        print(f"{s}: {statistics.mean(r[f'{s}_seconds'] for r in results):.0f} s per seed "
              f"(after the shared start, {start:.0f} s)")
    print(f"total {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
