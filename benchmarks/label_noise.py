"""Does `textclf audit` find wrong labels? Labels of the demo data flipped on purpose.

    OMP_NUM_THREADS=2 python benchmarks/label_noise.py [--rates 0 0.02 0.05 0.1] [--seeds 0 1 2]

The demo reviews (data/reviews.csv, 1,252 rows, 5 sentiment classes, as params.yaml's
data.labels orders them) get a known share of their labels flipped (`--rates`), seeded, in
two ways: `uniform`, to any other class with equal chance, and `adjacent`, to a neighbouring
class on the sentiment scale (very negative <-> negative <-> ... <-> very positive), the
realistic and harder case, where the wrong label is close to the right one. Each noisy
copy is audited as `textclf audit` audits the file (its core: out-of-fold probabilities by
`--folds`-fold cross-validation, `--epochs` per fold, params.yaml's model and train
settings; then textclf.training.label_issues; 3 and 4 as the command's defaults with the
demo params), and the suspects are compared with the rows flipped, once per `--seeds`.
`--rates` may include 0: the given labels as they are (what the audit flags there is the
demo data's own ambiguity, no flipped row to find).

Per method and ranking: the suspects (flagged), their precision and recall against the
flipped rows, and precision at k = the number flipped (the top k of the ranking: suspects
first, in the ranking's order, then everyone else in the same order; at that k precision
equals recall). Rankings: `self-confidence` (least sure first) and `combined` (the mean
rank by self-confidence and by the training margin, AUM, `textclf audit`'s default). The issue's
goal: precision@k at least 0.6 at 5% noise. The plain self-confidence ranking (every row,
least sure first) is the baseline. Last, a summary: the mean over the seeds, and the range
of precision@k.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from _common import REPO, machine
from textclf.audit import read_examples
from textclf.model.loading import quiet_transformers
from textclf.params import load_params
from textclf.training.cross_fit import assign_folds, cross_fit
from textclf.training.label_issues import find_label_issues

SCHEMES = ("uniform", "adjacent")
# (method, ranking): the suspects' order; `combined` adds the training margin (AUM)
METHODS = (("noise-rate", "combined"), ("noise-rate", "self-confidence"),
           ("both", "self-confidence"), ("self-confidence", "self-confidence"))


def flip_labels(label_ids: np.ndarray, classes: int, rate: float, scheme: str,
                seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(noisy labels, flipped row indices): round(rate x N) rows drawn without replacement;
    each gets another class, uniformly (`uniform`) or a neighbour on the ordinal scale
    (`adjacent`: either side with equal chance where there are two)."""
    rng = np.random.default_rng([seed, round(rate * 10_000), SCHEMES.index(scheme)])
    flipped = np.sort(rng.choice(len(label_ids), size=round(rate * len(label_ids)),
                                 replace=False))
    noisy = label_ids.copy()
    for row in flipped:
        given = label_ids[row]
        if scheme == "uniform":
            choices = [c for c in range(classes) if c != given]
        else:
            choices = [c for c in (given - 1, given + 1) if 0 <= c < classes]
        noisy[row] = rng.choice(choices)
    return noisy, flipped


def scores(probs: np.ndarray, training_margin: np.ndarray, noisy: np.ndarray,
           flipped: np.ndarray) -> list[dict]:
    """Per method and ranking: flagged, precision, recall, precision@k (k = flipped rows)."""
    k, truth = len(flipped), set(flipped.tolist())
    rows = []
    for method, rank_by in METHODS:
        issues = find_label_issues(probs, noisy, method, rank_by, training_margin)
        score = issues.rank_score
        rest = np.setdiff1d(np.argsort(score, kind="stable"), issues.ranked,
                            assume_unique=True)
        ranking = np.concatenate([issues.ranked, rest[np.argsort(score[rest], kind="stable")]])
        hits = len(truth & set(issues.ranked.tolist()))
        flagged = len(issues.ranked)
        rows.append({"method": f"{method}, by {rank_by}", "flagged": flagged,
                     "precision": hits / flagged if flagged and k else float("nan"),
                     "recall": hits / k if k else float("nan"),
                     "at_k": len(truth & set(ranking[:k].tolist())) / k if k else float("nan"),
                     "estimated": issues.estimated_errors})
    return rows


def audit_noisy_copy(examples, label_ids, labels, params, args, scheme: str, rate: float,
                     seed: int) -> list[dict]:
    """Flip, cross-fit, score: one row per method."""
    noisy, flipped = flip_labels(label_ids, len(labels), rate, scheme, seed)
    started = time.monotonic()
    fold_of = assign_folds(noisy, args.folds, params.train.seed, groups=examples["key"].tolist())
    fitted = cross_fit(examples["text"].tolist(), noisy, labels, params.model,
                       dataclasses.replace(params.train, epochs=args.epochs), fold_of,
                       on_fold=lambda done: print(f"{scheme} {rate:.0%} seed {seed}: fold "
                                                  f"{done.fold}/{done.folds} "
                                                  f"{done.seconds:.0f} s",
                                                  file=sys.stderr, flush=True))
    probs = fitted.probs
    minutes = (time.monotonic() - started) / 60
    if args.save:               # to score other rankings later without training again
        args.save.mkdir(parents=True, exist_ok=True)
        np.savez(args.save / f"{scheme}-{rate:g}-seed{seed}.npz", probs=probs, noisy=noisy,
                 flipped=flipped, given=label_ids, training_margin=fitted.training_margin)
    accuracy = float((probs.argmax(axis=1) == noisy).mean())
    return [{"rate": rate, "scheme": scheme if rate else "none", "seed": seed, "k": len(flipped),
             "accuracy": accuracy, "minutes": minutes, **row}
            for row in scores(probs, fitted.training_margin, noisy, flipped)]


def shown(value: float) -> str:
    return "-" if value != value else f"{value:.3f}"          # NaN: no flipped rows


def run(args: argparse.Namespace) -> None:
    params = load_params(REPO / "params.yaml")
    if args.model:
        params = dataclasses.replace(params, model=dataclasses.replace(params.model,
                                                                       name=args.model))
    examples, labels = read_examples(REPO / "data" / "reviews.csv", "text", "label",
                                     params.data.labels)
    label_ids = examples["label"].map(labels.index).to_numpy()
    print(f"{machine()}\n{len(examples)} reviews, {len(labels)} classes; {args.folds} folds x "
          f"{args.epochs} epochs of {params.model.name} (batch {params.train.batch_size}, lr "
          f"{params.train.lr}); flip seeds {args.seeds}\n")
    print("| noise | flip | seed | flipped (k) | out-of-fold accuracy | method | suspects "
          "(estimated) | precision | recall | precision@k | minutes |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    results = []
    for seed in args.seeds:
        for scheme in args.schemes:
            for rate in args.rates:
                if rate == 0 and (scheme, seed) != (args.schemes[0], args.seeds[0]):
                    continue            # the given labels: no flips, one run is enough
                for r in audit_noisy_copy(examples, label_ids, labels, params, args, scheme,
                                          rate, seed):
                    results.append(r)
                    if args.json:
                        args.json.write_text(json.dumps(results, indent=1, default=float))
                    print(f"| {r['rate']:.0%} | {r['scheme']} | {seed} | {r['k']} | "
                          f"{r['accuracy']:.3f} | {r['method']} | {r['flagged']} "
                          f"({r['estimated']:.0f}) | {shown(r['precision'])} | "
                          f"{shown(r['recall'])} | {shown(r['at_k'])} | {r['minutes']:.1f} |",
                          flush=True)
    print_summary(results)


def print_summary(results: list[dict]) -> None:
    """Mean and range over the seeds, per noise rate, flip and method."""
    print("\n| noise | flip | flipped (k) | method | suspects | precision | recall | "
          "precision@k: mean (range) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    cells: dict[tuple, list[dict]] = {}
    for r in results:
        cells.setdefault((r["rate"], r["scheme"], r["method"]), []).append(r)
    for (rate, scheme, method), runs in sorted(cells.items(), key=lambda c: (c[0][1], c[0][0])):
        at_k = [r["at_k"] for r in runs]
        mean = {key: float(np.mean([r[key] for r in runs]))
                for key in ("flagged", "precision", "recall")}
        spread = f" ({min(at_k):.3f}-{max(at_k):.3f})" if len(runs) > 1 and runs[0]["k"] else ""
        print(f"| {rate:.0%} | {scheme} | {runs[0]['k']} | {method} | {mean['flagged']:.0f} | "
              f"{shown(mean['precision'])} | {shown(mean['recall'])} | "
              f"{shown(float(np.mean(at_k)))}{spread} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=float, nargs="+", default=[0, 0.02, 0.05, 0.10])
    parser.add_argument("--schemes", choices=SCHEMES, nargs="+", default=list(SCHEMES))
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="which rows flip, and to what: one audit per seed and noisy copy")
    parser.add_argument("--model", metavar="NAME_OR_DIR",
                        help="the pretrained model to fine-tune instead of params.yaml's")
    parser.add_argument("--json", type=Path, help="write every audit's figures here as it ends")
    parser.add_argument("--summary", type=Path, nargs="+", metavar="JSON",
                        help="no audits: the summary of the runs these --json files hold "
                             "(runs split by seed over several processes, say)")
    parser.add_argument("--save", type=Path, metavar="DIR",
                        help="keep each run's out-of-fold probabilities (NPZ) here")
    args = parser.parse_args()
    if args.summary:
        print_summary([r for path in args.summary for r in json.loads(path.read_text())])
        return
    quiet_transformers()
    run(args)


if __name__ == "__main__":
    main()
