"""A search with pruning (`textclf tune`) against the full grid of the same space, on SST-5.

The grid: every point of the space trained for all its epochs with the train stage's loop
(textclf.training.loop.run_epochs, in this process: no DVC), each epoch scored on SST-5's
official dev set; the curves are saved to --curves after each point, so a stopped run goes
on where it stopped. The search: `textclf tune`'s own study loop and trial reporting
(textclf.sweeps.study.run_study, textclf.training.trial.TrialReport) with TPE and the
median pruner, for each study seed and trial count; its trials replay the grid's recorded
curves epoch by epoch instead of training again. That is exact because training is
deterministic (same params, data, seed and threads, same numbers; the test suite checks it):
a pruned trial trains the same first epochs as the full run of its point. The script checks
this once by training the grid's best point again through the pruning path
(`run_epochs(end_early=...)`) and comparing its first epoch with the grid's.

Costs are counted in training epochs (a trial that the sampler proposes twice pays twice,
as `textclf tune` would); a trial's value, as in `textclf tune`, is the dev accuracy of the
epoch the run keeps (the best by macro-F1).

    OMP_NUM_THREADS=1 python benchmarks/tune_vs_grid.py --train-size 600 --epochs 3 \\
        --curves /tmp/tune_vs_grid.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from _common import LABELS, REPO, machine, sst5_or_standin
from textclf.model.loading import DEFAULT_MODEL, attention_for, load_pretrained, quiet_transformers
from textclf.model.precision import choose_precision
from textclf.params import TrainParams
from textclf.resample import resample_by_ratio
from textclf.sweeps.search_space import read_config
from textclf.sweeps.study import Outcome, open_study, run_study
from textclf.training.loop import encode_split, run_epochs
from textclf.training.state import Compute, EpochResult, best_epoch, new_state
from textclf.training.trial import TrialReport, import_optuna

CPU = torch.device("cpu")
METRIC = "val_accuracy"
SPACE = {"train.lr": [3e-5, 1e-4, 3e-4], "train.batch_size": [16, 32],
         "data.class_ratio": [None, [1, 1, 1, 1, 1]]}
SEED = 42                                  # params.yaml's train.seed and data.seed


def space_file(folder: Path, seed: int, trials: int) -> Path:
    """The search's tune.yaml: the grid's values as choices, TPE, the median pruner."""
    params = "\n".join(f"  {key}: {{choice: {json.dumps(values)}}}" for key, values in
                       SPACE.items())
    path = folder / f"tune-{seed}.yaml"
    path.write_text(f"metric: {METRIC}\ntrials: {trials}\n"
                    f"sampler: {{name: tpe, seed: {seed}, n_startup_trials: 3}}\n"
                    f"pruner: {{name: median, n_startup_trials: 2, n_warmup_steps: 0}}\n"
                    f"params:\n{params}\n")
    return path


def key(point: dict) -> str:
    return json.dumps(point, sort_keys=True)


def train_point(point: dict, train, dev, args, end_after: int | None = None):
    """(epoch results, seconds per epoch) of one grid point, as the train stage trains it."""
    import transformers

    frame = resample_by_ratio(train, LABELS, point["data.class_ratio"], SEED)
    transformers.set_seed(SEED)
    tokenizer, model = load_pretrained(DEFAULT_MODEL, LABELS, attention_for(CPU, args.max_length))
    params = TrainParams(batch_size=point["train.batch_size"], epochs=args.epochs,
                         lr=point["train.lr"], seed=SEED)
    compute = Compute(CPU, choose_precision(CPU, params.precision, purpose="train"),
                      tokenizer.pad_token_id)
    data = encode_split(tokenizer, frame, LABELS, args.max_length)
    val = encode_split(tokenizer, dev, LABELS, args.max_length)
    state = new_state(model, params, len(data.ids), compute)
    times, start = [], time.perf_counter()

    def timed(result: EpochResult) -> None:
        nonlocal start
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
        print(f"  epoch {result.epoch}: dev accuracy {result.val_accuracy:.4f} "
              f"({times[-1]:.0f} s)", flush=True)

    run_epochs(state, data, val, params, compute, on_epoch=timed, progress=False,
               end_early=lambda r: end_after is not None and r.epoch >= end_after)
    return state.history, times


def grid_curves(args, train, dev) -> dict[str, dict]:
    """Every point's curve, from --curves where an earlier run recorded it."""
    path = Path(args.curves)
    curves = json.loads(path.read_text()) if path.is_file() else {}
    for values in itertools.product(*SPACE.values()):
        point = dict(zip(SPACE, values))
        if key(point) in curves:
            continue
        print(f"grid point {len(curves) + 1}: {point}", flush=True)
        history, times = train_point(point, train, dev, args)
        curves[key(point)] = {"history": [vars(r) for r in history], "seconds": times}
        path.write_text(json.dumps(curves, indent=1))
    return curves


def history_of(curves: dict, point: dict) -> list[EpochResult]:
    return [EpochResult(**r) for r in curves[key(point)]["history"]]


def replay(curves: dict):
    """A trial that reports the grid's recorded epochs through TrialReport, as train does."""
    def run_trial(trial, params) -> Outcome:
        report = TrialReport(trial, METRIC, f"replay-{trial.number}")
        history = history_of(curves, params)
        for result in history:
            if report.pruned_after(result):
                return Outcome("pruned", epochs=result.epoch, pruned_at_epoch=result.epoch)
        return Outcome("complete", value=getattr(best_epoch(history), METRIC),
                       epochs=len(history))
    return run_trial


def search(curves: dict, seed: int, trials: int, folder: Path) -> dict:
    optuna = import_optuna()
    config = read_config(space_file(folder, seed, trials), REPO / "params.yaml")
    storage = optuna.storages.InMemoryStorage()
    study = open_study(config, f"seed{seed}", storage, say=lambda line: None)
    run_study(study, storage, config, replay(curves), trials=trials, say=lambda line: None)
    done = study.trials
    complete = [t for t in done if t.state.name == "COMPLETE"]
    seconds = sum(sum(curves[key(config.suggest(t))]["seconds"][:len(t.intermediate_values)])
                  for t in done)
    return {"epochs": sum(len(t.intermediate_values) for t in done), "seconds": seconds,
            "best": max(t.value for t in complete), "complete": len(complete),
            "pruned": sum(t.state.name == "PRUNED" for t in done),
            "distinct": len({key(config.suggest(t)) for t in done})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-size", type=int, default=600, help="SST-5 training sentences")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of a full training")
    parser.add_argument("--max-length", type=int, default=64, help="tokens per sentence")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="study seeds")
    parser.add_argument("--trials", type=int, nargs="+", default=[6, 8, 10],
                        help="study sizes to replay")
    parser.add_argument("--curves", default="tune_vs_grid_curves.json",
                        help="the grid's recorded curves (read, and written after each point)")
    args = parser.parse_args()
    quiet_transformers()
    train, dev, source = sst5_or_standin(args.train_size)
    print(f"{machine()}\ndata: {source}; max length {args.max_length}; {args.epochs} epochs "
          f"per full training; space {SPACE}\n", flush=True)
    curves = grid_curves(args, train, dev)

    values = {k: getattr(best_epoch(history_of(curves, json.loads(k))), METRIC) for k in curves}
    best_key = max(values, key=values.get)
    grid_epochs = sum(len(c["history"]) for c in curves.values())
    grid_seconds = sum(sum(c["seconds"]) for c in curves.values())
    print(f"\ngrid: {len(curves)} points, {grid_epochs} epochs, {grid_seconds:.0f} s of "
          f"training; best dev accuracy {values[best_key]:.4f} at {best_key}")
    for k in sorted(values, key=values.get, reverse=True):
        print(f"  {values[k]:.4f}  {k}")

    print("\ncheck: the grid's best point again, stopped after epoch 1 as a pruned trial is")
    again, _ = train_point(json.loads(best_key), train, dev, args, end_after=1)
    recorded = history_of(curves, json.loads(best_key))[0]
    same = (again[0].val_accuracy, again[0].val_loss) == (recorded.val_accuracy,
                                                          recorded.val_loss)
    print(f"  epoch 1 dev accuracy {again[0].val_accuracy:.4f} / loss {again[0].val_loss:.6f}, "
          f"grid {recorded.val_accuracy:.4f} / {recorded.val_loss:.6f}: "
          f"{'identical' if same else 'DIFFERENT: the replay is not exact'}")

    print("\n| trials | seed | complete / pruned | distinct points | epochs (% of grid) | "
          "training s (% of grid) | best dev accuracy | gap to grid best (points) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as folder:
        for trials in args.trials:
            runs = [search(curves, seed, trials, Path(folder)) for seed in args.seeds]
            for seed, r in zip(args.seeds, runs):
                print(f"| {trials} | {seed} | {r['complete']} / {r['pruned']} | {r['distinct']} | "
                      f"{r['epochs']} ({r['epochs'] / grid_epochs:.1%}) | {r['seconds']:.0f} "
                      f"({r['seconds'] / grid_seconds:.0%}) | {r['best']:.4f} | "
                      f"{100 * (values[best_key] - r['best']):.2f} |")
            share = statistics.mean(r["epochs"] for r in runs) / grid_epochs
            gap = 100 * (values[best_key] - statistics.mean(r["best"] for r in runs))
            verdict = "meets" if share <= 0.40 and gap <= 0.5 else "misses"
            print(f"| {trials} | mean | | | {share:.1%} | | | {gap:.2f} ({verdict} the goal: "
                  f"<= 0.5 points at <= 40% of the epochs) |")


if __name__ == "__main__":
    main()
