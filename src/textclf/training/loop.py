"""The training loop, one for every caller: short steps (an epoch, a validation, the best
weights) advancing a TrainingState (textclf.training.state), with the stop request, the
checkpoint store and the per-epoch report as parameters (`run_epochs`; `fit` is the
in-memory form tests and benchmarks use). The loop knows nothing of files, signals or
processes: `train` passes them in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from textclf.errors import UserError
from textclf.metrics import calibration_metrics, macro_f1
from textclf.model.batching import encode, length_grouped_batches, pad_batch
from textclf.model.calibration import Calibration, fit_temperature
from textclf.model.engines.pytorch import autocast, predict_proba
from textclf.params import TrainParams
from textclf.training.checkpoint import CheckpointStore
from textclf.training.distributed import Workers
from textclf.training.state import Compute, EpochResult, TrainingState, best_epoch, new_state


def eval_batch_size(params: TrainParams) -> int:
    """Validation needs no gradients, so its batches can be larger: at least 64."""
    return max(64, params.batch_size)


class TrainingDiverged(UserError):
    """The loss became NaN or infinite: the weights are garbage and nothing is saved."""


@dataclass(frozen=True)
class Encoded:
    """A split as token ids and label ids."""
    ids: list[list[int]]
    labels: np.ndarray


def encode_split(tokenizer, frame, labels: Sequence[str], max_length: int) -> Encoded:
    label_ids = {label: i for i, label in enumerate(labels)}
    return Encoded(ids=encode(tokenizer, frame["text"].tolist(), max_length),
                   labels=frame["label"].map(label_ids).to_numpy(dtype=np.int64))


def batch_loss(runner: torch.nn.Module, batch: dict[str, torch.Tensor],
               params: TrainParams) -> torch.Tensor:
    """The model's cross-entropy, or with the levers on: label smoothing, and R-Drop (the
    batch twice through dropout in one forward; mean cross-entropy of the two passes plus
    `rdrop` x their symmetric KL divergence, as in Liang et al. 2021)."""
    if not params.label_smoothing and not params.rdrop:
        return runner(**batch).loss
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if params.rdrop:
        inputs = {k: torch.cat([v, v]) for k, v in inputs.items()}
    logits = runner(**inputs).logits.float()
    if not params.rdrop:
        return F.cross_entropy(logits, labels, label_smoothing=params.label_smoothing)
    first, second = logits.chunk(2)
    loss = (F.cross_entropy(first, labels, label_smoothing=params.label_smoothing)
            + F.cross_entropy(second, labels, label_smoothing=params.label_smoothing)) / 2
    log_p, log_q = F.log_softmax(first, dim=-1), F.log_softmax(second, dim=-1)
    kl = (F.kl_div(log_p, log_q, reduction="batchmean", log_target=True)
          + F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)) / 2
    return loss + params.rdrop * kl


def make_batches(data: Encoded, batch_size: int, pad_id: int,
                 rng: np.random.Generator) -> list[dict[str, torch.Tensor]]:
    """One epoch of padded batches, built up front so the step loop does no host work."""
    lengths = [len(seq) for seq in data.ids]
    batches = []
    for rows in length_grouped_batches(lengths, batch_size, rng):
        batch = pad_batch([data.ids[i] for i in rows], pad_id)
        batch["labels"] = torch.from_numpy(data.labels[rows])
        batches.append(batch)
    return batches


def epoch_batches(state: TrainingState, data: Encoded, batch_size: int, pad_id: int):
    """This epoch's batches; a resumed epoch re-creates the same order from its saved state."""
    if state.epoch_rng is None:
        state.epoch_rng = state.data_rng.bit_generator.state
        return make_batches(data, batch_size, pad_id, state.data_rng)
    replay = np.random.default_rng()
    replay.bit_generator.state = state.epoch_rng
    batches = make_batches(data, batch_size, pad_id, replay)
    state.data_rng.bit_generator.state = replay.bit_generator.state
    return batches


def clip_gradients(weights: list[torch.nn.Parameter], max_norm: float) -> None:
    """`torch.nn.utils.clip_grad_norm_`, without its multiply-by-1.0 pass over every
    gradient when the norm is already within `max_norm` (~5 ms of a MiniLM CPU step):
    there its clip factor is clamped to 1.0, so skipping it changes no bit."""
    grads = [w.grad for w in weights if w.grad is not None]
    total = torch.nn.utils.get_total_norm(grads, foreach=True)
    # The factor exactly as clip_grads_with_norm_ computes it; NaN (a non-finite gradient)
    # is not >= 1, so such steps go through it as before.
    if not bool(max_norm / (total + 1e-6) >= 1.0):
        torch.nn.utils.clip_grads_with_norm_(weights, max_norm, total, foreach=True)


def train_epoch(state: TrainingState, data: Encoded, params: TrainParams, compute: Compute,
                should_stop: Callable[[], bool] = lambda: False, progress: bool = True,
                workers: Workers = Workers()) -> float | None:
    """Advance one epoch from `state.step`; the mean loss, or None if stopped midway.
    With several `workers`, each runs its share of every batch
    (see textclf.training.distributed)."""
    model, epoch = state.model, state.epoch + 1
    device, precision = compute.device, compute.precision
    runner = state.runner or model
    trainable = [w for w in model.parameters() if w.requires_grad]
    batches = epoch_batches(state, data, params.batch_size, compute.pad_id)
    model.train()
    bar = tqdm(batches[state.step:], disable=not progress or not workers.is_main,
               initial=state.step,
               total=len(batches), desc=f"epoch {epoch}/{params.epochs}", unit="batch")
    for batch in bar:
        batch, weight = workers.shard(batch)
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with autocast(device, precision):
            loss = batch_loss(runner, batch, params)
        # weight is 1 with one process, so the single-process arithmetic is unchanged.
        state.scaler.scale(loss * weight if weight != 1.0 else loss).backward()
        state.scaler.unscale_(state.optimizer)
        clip_gradients(trainable, params.max_grad_norm)
        state.scaler.step(state.optimizer)
        state.scaler.update()
        state.schedule.step()
        state.optimizer.zero_grad(set_to_none=True)
        if state.average is not None:
            state.average.update_parameters(model)
        # A float per step (one device sync) keeps the sum identical however often
        # the epoch is interrupted and resumed, and catches a NaN where it appears.
        state.loss_sum += workers.total(loss.item() * weight / workers.size)
        state.step += 1
        if not math.isfinite(state.loss_sum):
            break
        if workers.any(should_stop()) and state.step < len(batches):
            return None
    if not math.isfinite(state.loss_sum):
        raise TrainingDiverged(f"train: the training loss became {state.loss_sum} in epoch "
                               f"{epoch}, step {state.step} (train.lr={params.lr}, precision "
                               f"{precision}); nothing was saved: lower train.lr or use "
                               f"train.precision: fp32")
    mean = state.loss_sum / len(batches)
    state.step, state.loss_sum, state.epoch_rng = 0, 0.0, None
    return mean


def split_probabilities(model, data: Encoded, batch_size: int, compute: Compute) -> np.ndarray:
    """(N, C) class probabilities of a split, as validation computes them."""
    return predict_proba(model, data.ids, compute.pad_id, batch_size, compute.device,
                         compute.precision)


def validate(model, data: Encoded, batch_size: int,
             compute: Compute) -> tuple[float, float, float]:
    """(mean cross-entropy, accuracy, macro-F1) on a labelled split."""
    probs = split_probabilities(model, data, batch_size, compute)
    predicted = probs.argmax(axis=1)
    true_prob = probs[np.arange(len(data.labels)), data.labels]
    loss = float(-np.log(np.clip(true_prob, 1e-12, None)).mean())
    return (loss, float((predicted == data.labels).mean()),
            macro_f1(data.labels, predicted, range(probs.shape[1])))


def calibrate(model, val: Encoded, batch_size: int,
              compute: Compute) -> tuple[Calibration, dict[str, float]]:
    """Temperature scaling fitted on the validation split with `model`'s weights (the best
    epoch's, loaded by the caller), and the validation scores it changes: temperature,
    ece/nll/brier/classwise_ece after, and each `_uncalibrated`."""
    probs = split_probabilities(model, val, batch_size, compute)
    calibration = fit_temperature(probs, val.labels)
    before = calibration_metrics(probs, val.labels)
    after = calibration_metrics(calibration.apply(probs), val.labels)
    return calibration, {"temperature": calibration.temperature, **after,
                         **{f"{name}_uncalibrated": value for name, value in before.items()}}


def finish_epoch(state: TrainingState, train_loss: float, val: Encoded, batch_size: int,
                 compute: Compute) -> EpochResult:
    """Validate, record the epoch, and keep a CPU copy of the weights if they are the best."""
    state.epoch += 1
    val_loss, accuracy, f1 = validate(state.judged, val, batch_size, compute)
    result = EpochResult(state.epoch, train_loss, val_loss, accuracy, f1)
    state.history.append(result)
    if best_epoch(state.history) is result:
        state.best_weights = {k: v.detach().to("cpu", copy=True)
                              for k, v in state.judged.state_dict().items()}
    return result


def run_epochs(state: TrainingState, train: Encoded, val: Encoded, params: TrainParams,
               compute: Compute, *, on_epoch: Callable[[EpochResult], None] = lambda r: None,
               should_stop: Callable[[], bool] = lambda: False,
               store: CheckpointStore | None = None, workers: Workers = Workers(),
               progress: bool = True,
               end_early: Callable[[EpochResult], bool] = lambda result: False) -> bool:
    """Epochs from wherever `state` is to `params.epochs`, reporting each to `on_epoch`.
    With a `store`, a checkpoint is saved (in the background) at an epoch's end when the
    store says one is due, and when `should_stop()` stops an epoch midway. `end_early`
    true after an epoch (a tuning study's pruner, textclf.training.trial) ends training
    there, finished. Returns True when training finished, False when stopped."""
    while state.epoch < params.epochs:
        loss = train_epoch(state, train, params, compute, should_stop, progress, workers)
        if loss is None:
            if store is not None:
                store.save(state.state_dict())
            return False
        result = finish_epoch(state, loss, val, eval_batch_size(params), compute)
        on_epoch(result)
        if workers.any(end_early(result)):
            return True
        if store is not None and state.epoch < params.epochs and store.due():
            store.save_in_background(state.state_dict())
    return True


def fit(model, train: Encoded, val: Encoded, params: TrainParams, compute: Compute,
        on_epoch: Callable[[EpochResult], None] = lambda result: None,
        progress: bool = True) -> list[EpochResult]:
    """Train for `params.epochs` in memory (no checkpoints, no stop request); leave the
    model with the best epoch's weights and return the history."""
    state = new_state(model, params, len(train.ids), compute)
    run_epochs(state, train, val, params, compute, on_epoch=on_epoch, progress=progress)
    model.load_state_dict(state.best_weights)
    return state.history
