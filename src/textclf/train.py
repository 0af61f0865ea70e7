"""Stage `train`: fine-tune a transformer classifier and keep its best epoch.

Training is resumable: a checkpoint is saved at an epoch's end once a minute has passed
since the last (--checkpoint-interval) and when the process is asked to stop (SIGTERM,
Ctrl-C); the next `dvc repro` / `dvc exp run` with the same
params, code and data continues from it (see textclf.training.checkpoint).

After the last epoch, the main process fits temperature scaling to the best epoch's
validation probabilities (textclf.model.calibration); training_info.json records the
temperature and metrics/train/metrics.json the validation scores before and after it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import platform
import signal
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from textclf.data.dataset import class_counts, fingerprint, read_labels, read_split
from textclf.errors import exits_on_user_error
from textclf.model.card import WarmStartLabels, model_card
from textclf.model.folder import TrainingInfo
from textclf.model.loading import (attention_for, check_max_length, load_pretrained,
                                   quiet_transformers, resolve_model, save_classifier,
                                   weights_sha256)
from textclf.model.precision import LayerShape, choose_device, choose_precision
from textclf.outputs import atomic_dir
from textclf.params import ModelParams, Params, load_params
from textclf.training.checkpoint import (WEIGHTS, CheckpointStore, DamagedCheckpoint,
                                         default_dir, default_interval, fingerprint_run,
                                         parse_interval)
from textclf.training.distributed import (Workers, device_for, launch, launched_by_torchrun,
                                          process_group, wrap)
from textclf.training.loop import calibrate, encode_split, eval_batch_size, run_epochs
from textclf.training.state import Compute, EpochResult, best_epoch, new_state
from textclf.training.trial import TrialReport


class StopRequest:
    """Turns SIGTERM / SIGINT into a flag the loop checks between steps, so the process
    can save a checkpoint before it exits."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __call__(self) -> bool:
        return self.signal is not None

    @contextlib.contextmanager
    def installed(self):
        previous = {sig: signal.signal(sig, self._handle)
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        # Ctrl-C twice: stop now. A SIGTERM again is the same request: torchrun sends its
        # processes two a few milliseconds apart, and kills them itself 30 s later.
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum


def load_model(params: Params, labels: list[str], counts: dict[str, int],
               device: torch.device):
    """(tokenizer, model, label order, what a warm start did to the old labels or None):
    the pretrained base, or `model.init_from` less `model.drop_labels`. `counts` are the
    data's examples per label."""
    attention = attention_for(device, params.model.max_length)
    if params.model.init_from:
        from textclf.training.warm_start import start_from

        tokenizer, model, change = start_from(params.model.init_from, labels, attention,
                                              params.model.labels_to_drop(), counts)
        return tokenizer, model, change.order, WarmStartLabels(
            folder=change.source, old_labels=change.old, dropped=change.dropped)
    tokenizer, model = load_pretrained(params.model.name, labels, attention)
    return tokenizer, model, labels, None


def starting_weights(model: ModelParams) -> dict[str, str]:
    """The weights a run starts from, for its checkpoint's fingerprint: a run stopped while
    warm-starting from a folder must not resume once that folder holds other weights."""
    folder = model.init_from or resolve_model(model.name)
    if not Path(folder).is_dir():            # a hub id: its revision is not known here
        return {}
    return {f"{WEIGHTS}{folder}": weights_sha256(folder)}


def stopped(state, stop: StopRequest, say=print) -> SystemExit:
    """The exit after a stop request: the checkpoint is saved, say how to resume."""
    signum = stop.signal or signal.SIGTERM
    say(f"train: stopped by {signal.Signals(signum).name} in epoch {state.epoch + 1} after "
          f"batch {state.step}; checkpoint saved, `dvc repro` (or the same `dvc exp run`) "
          f"resumes from here", file=sys.stderr)
    return SystemExit(128 + signum)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="textclf train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file (params.yaml)")
    parser.add_argument("--train", required=True, help="training split (Parquet)")
    parser.add_argument("--val", required=True, help="validation split (Parquet)")
    parser.add_argument("--labels", required=True, help="labels.json from prepare")
    parser.add_argument("--model-dir", required=True, help="output folder for the model")
    parser.add_argument("--live-dir", required=True, help="dvclive folder for metrics/plots")
    parser.add_argument("--checkpoint-dir", type=Path, default=None,
                        help="where resumable checkpoints go (default: $TEXTCLF_CHECKPOINT_DIR "
                             "or ~/.cache/textclf/checkpoints)")
    parser.add_argument("--checkpoint-interval", metavar="SECONDS", default=None,
                        help="checkpoint at an epoch's end once this many seconds have passed "
                             "since the last (0: after every epoch; a stop request always "
                             "saves); default: $TEXTCLF_CHECKPOINT_INTERVAL or 60")
    args = parser.parse_args(argv)
    args.checkpoint_interval = (default_interval() if args.checkpoint_interval is None else
                                parse_interval(args.checkpoint_interval, "--checkpoint-interval"))
    return args


@exits_on_user_error
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    params = load_params(args.params)
    if params.train.processes > 1 and not launched_by_torchrun():
        labels = read_labels(args.labels)     # bad files: one line here, not one per process
        read_split(args.train, labels), read_split(args.val, labels)
        raise SystemExit(launch(params.train.processes, argv))
    quiet_transformers()
    with process_group(choose_device().type) as workers:
        train_and_save(args, params, workers)


def train_and_save(args: argparse.Namespace, params: Params, workers: Workers) -> None:
    """Train (on every rank) and, on rank 0, write the model, curves and model card."""
    import transformers
    from dvclive import Live

    started = time.monotonic()
    transformers.set_seed(params.train.seed)
    device = device_for(workers, choose_device())
    say = print if workers.is_main else (lambda *a, **k: None)
    trial = TrialReport.from_env() if workers.is_main else None   # None unless `textclf tune`
    data_labels = read_labels(args.labels)
    train_frame, val_frame = read_split(args.train, data_labels), read_split(args.val, data_labels)
    counts = class_counts(pd.concat([train_frame, val_frame]), data_labels)
    tokenizer, model, labels, warm_start = load_model(params, data_labels, counts, device)
    if warm_start and warm_start.dropped:
        say(f"train: dropped {', '.join(warm_start.dropped)} (model.drop_labels) from the "
            f"model in {warm_start.folder}")
    max_length = params.model.max_length
    check_max_length(max_length, model, tokenizer, params.model.init_from or params.model.name)
    train = encode_split(tokenizer, train_frame, labels, max_length)
    val = encode_split(tokenizer, val_frame, labels, max_length)
    precision = choose_precision(device, params.train.precision, purpose="train",
                                 shape=LayerShape.of(model.config, params.train.batch_size))
    compute = Compute(device, precision, tokenizer.pad_token_id)
    say(f"train: {params.model.init_from or params.model.name} on {device.type} ({precision}"
        f"{f', {workers.size} processes' if workers.size > 1 else ''}), {len(train.ids)} "
        f"train / {len(val.ids)} val examples, {len(labels)} labels")

    section_params = {"model": dataclasses.asdict(params.model),
                      "train": dataclasses.asdict(params.train)}
    data_sha256 = fingerprint([args.train, args.val, args.labels])
    store = CheckpointStore(args.checkpoint_dir or default_dir(),
                            fingerprint_run(section_params,
                                            {**data_sha256, **starting_weights(params.model)},
                                            str(Path(args.model_dir).resolve())),
                            writable=workers.is_main, interval_s=args.checkpoint_interval)
    state = new_state(model, params.train, len(train.ids), compute)
    state.runner = wrap(model, workers, device)
    if params.train.resume:
        found, why = store.find()
        say(f"train: {why}")
        try:
            saved = store.load() if found else None
        except DamagedCheckpoint as err:
            saved = None
            say(f"train: {err}; starting fresh")
        if saved is not None:
            state.load_state_dict(saved)
            say(f"train: continuing at epoch {state.epoch + 1} of {params.train.epochs}"
                + (f", batch {state.step + 1}" if state.step else ""))
    else:
        store.remove()
        say("train: train.resume is false: starting fresh")

    with output_dirs(args, workers.is_main) as (live_dir, model_dir):
        with (Live(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None)
              if live_dir else contextlib.nullcontext()) as live:
            def log_epoch(result: EpochResult) -> None:
                if live is None:
                    return
                live.log_metric("train/loss", result.train_loss)
                live.log_metric("val/loss", result.val_loss)
                live.log_metric("val/accuracy", result.val_accuracy)
                live.log_metric("val/f1_macro", result.val_f1_macro)
                live.next_step()
                print(f"epoch {result.epoch}: loss {result.train_loss:.4f}, val loss "
                      f"{result.val_loss:.4f}, accuracy {result.val_accuracy:.4f}, "
                      f"macro-F1 {result.val_f1_macro:.4f}")

            for done in state.history:  # a resumed run's curves continue, not restart
                log_epoch(done)
            with StopRequest().installed() as stop:
                if not run_epochs(state, train, val, params.train, compute, on_epoch=log_epoch,
                                  should_stop=stop, store=store, workers=workers,
                                  end_early=trial.pruned_after if trial else lambda r: False):
                    raise stopped(state, stop, say)
            if trial and trial.pruned_at:
                say(f"train: pruned after epoch {trial.pruned_at} by the study's pruner "
                    f"(experiment {trial.experiment})")
            best = best_epoch(state.history)
            if workers.is_main:
                # Every path (one process or rank 0 of several; fresh, resumed or warm-started)
                # arrives here with the best epoch's weights in state.best_weights.
                model.load_state_dict(state.best_weights)
                calibration, calibration_scores = calibrate(
                    model, val, eval_batch_size(params.train), compute)
            if live is not None:
                live.summary.update({"best_epoch": best.epoch,
                                     "best": {"val_accuracy": best.val_accuracy,
                                              "val_f1_macro": best.val_f1_macro,
                                              "val_loss": best.val_loss},
                                     "calibration": calibration_scores})
                if trial and trial.pruned_at:
                    live.summary["pruned_at_epoch"] = trial.pruned_at
                say(f"train: temperature {calibration.temperature:.3f} fitted on the "
                    f"validation split: ECE {calibration_scores['ece_uncalibrated']:.4f} -> "
                    f"{calibration_scores['ece']:.4f}, NLL "
                    f"{calibration_scores['nll_uncalibrated']:.4f} -> "
                    f"{calibration_scores['nll']:.4f}")
                # Beside the scores, not in them: metrics.json stays a pure function of
                # data, params and code (a resumed run's is byte-equal to an uninterrupted
                # one's). This process's time only, if it resumed an earlier one.
                (live_dir / "time.json").write_text(json.dumps(
                    {"train_seconds": round(time.monotonic() - started, 1)}) + "\n")
        if model_dir:
            save_model(model, tokenizer, best, model_dir, TrainingInfo(
                labels=list(labels), max_length=max_length,
                base_model=params.model.init_from or params.model.name,
                params=section_params, data_sha256=data_sha256, best_epoch=best.epoch,
                precision=precision,
                versions={"torch": torch.__version__, "transformers": transformers.__version__,
                          "python": platform.python_version()},
                calibration=calibration.to_dict(), validation_split=str(args.val)),
                warm_start)
    store.remove()
    say(f"train: best epoch {best.epoch} (val macro-F1 {best.val_f1_macro:.4f}) "
        f"saved to {args.model_dir}")


@contextlib.contextmanager
def output_dirs(args: argparse.Namespace, is_main: bool):
    """(live dir, model dir) as scratch folders that replace the outputs on success; only
    the main process writes outputs, the others get (None, None)."""
    if not is_main:
        yield None, None
        return
    with atomic_dir(args.live_dir) as live_dir, atomic_dir(args.model_dir) as model_dir:
        yield live_dir, model_dir


def save_model(model, tokenizer, best: EpochResult, folder: Path, info: TrainingInfo,
               warm_start: WarmStartLabels | None) -> None:
    """The model, with the best epoch's weights already loaded, and its card."""
    save_classifier(model.cpu(), tokenizer, folder, info)
    (folder / "README.md").write_text(model_card(info, {
        "accuracy": best.val_accuracy, "macro-F1": best.val_f1_macro,
        "loss": best.val_loss}, warm_start), encoding="utf-8")


if __name__ == "__main__":
    main()
