"""The state of a training run: everything a resumed run needs to continue exactly where an
interrupted one stopped (weights, optimizer, schedule, scaler, RNG states, position in the
epoch, history, best weights), built fresh by `new_state`. `state_dict`/`load_state_dict`
are what a checkpoint (textclf.training.checkpoint) saves and restores; the loop
(textclf.training.loop) advances it.
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from textclf.params import TrainParams
from textclf.training import dropout as fast_dropout


@dataclass(frozen=True)
class Compute:
    """Where the passes run, in which precision, and the pad id batches are padded with:
    the three travel together through every step of the loop."""
    device: torch.device
    precision: str = "fp32"
    pad_id: int = 0



@dataclass(frozen=True)
class EpochResult:
    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    val_f1_macro: float

    def rank(self) -> tuple[float, float, int]:
        """Best by validation macro-F1; a tie goes to the lower validation loss, then to
        the later (more trained) epoch."""
        return (self.val_f1_macro, -self.val_loss, self.epoch)


def best_epoch(history: Sequence[EpochResult]) -> EpochResult:
    return max(history, key=EpochResult.rank)


@dataclass
class TrainingState:
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    data_rng: np.random.Generator
    epoch: int = 0                        # epochs completed
    step: int = 0                         # batches done in epoch `epoch + 1`
    loss_sum: float = 0.0                 # over those batches
    epoch_rng: dict | None = None         # data_rng state that ordered epoch `epoch + 1`
    history: list[EpochResult] = field(default_factory=list)
    best_weights: dict[str, torch.Tensor] | None = None
    average: AveragedModel | None = None   # EMA of the weights (train.ema_decay)
    runner: torch.nn.Module | None = None  # what forward/backward go through (e.g. DDP)

    @property
    def judged(self) -> torch.nn.Module:
        """The weights that are validated and kept: the average when there is one."""
        return self.average.module if self.average is not None else self.model

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(), "scaler": self.scaler.state_dict(),
            "data_rng": self.data_rng.bit_generator.state, "epoch": self.epoch,
            "step": self.step, "loss_sum": self.loss_sum, "epoch_rng": self.epoch_rng,
            "history": [dataclasses.asdict(r) for r in self.history],
            "best_weights": self.best_weights,
            "average": self.average.state_dict() if self.average is not None else None,
            "rng": {"python": random.getstate(), "numpy": _numpy_global_rng(),
                    "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])
        self.data_rng.bit_generator.state = state["data_rng"]
        self.epoch, self.step = state["epoch"], state["step"]
        self.loss_sum, self.epoch_rng = state["loss_sum"], state["epoch_rng"]
        self.history = [EpochResult(**r) for r in state["history"]]
        self.best_weights = state["best_weights"]
        if self.average is not None:
            self.average.load_state_dict(state["average"])
        random.setstate(state["rng"]["python"])
        kind, key, *rest = state["rng"]["numpy"]
        np.random.set_state((kind, np.asarray(key, dtype=np.uint32), *rest))
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])


def _numpy_global_rng() -> tuple:
    # As plain Python values: checkpoints are loaded with torch.load(weights_only=True).
    kind, key, *rest = np.random.get_state()
    return (kind, key.tolist(), *rest)


def build_optimizer(model, params: TrainParams, total_steps: int, device: torch.device):
    """AdamW (no decay on biases and LayerNorm) with linear warm-up, then linear decay;
    with `layer_lr_decay` < 1, each encoder layer's lr shrinks by that factor per layer
    below the top (embeddings lowest), the head keeping `lr`."""
    from transformers import get_linear_schedule_with_warmup

    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    depth = _layer_depths(model) if params.layer_lr_decay < 1 else {}
    for name, weight in model.named_parameters():
        if weight.requires_grad:
            decay = 0.0 if weight.ndim < 2 else params.weight_decay
            lr = params.lr * params.layer_lr_decay ** depth.get(name, 0)
            groups.setdefault((decay, lr), []).append(weight)
    # The fused kernel does AdamW's arithmetic in one pass over memory; on a CPU
    # the plain loop spent a quarter of each step there (benchmarks/README.md).
    fused = device.type in ("cpu", "cuda")
    optimizer = torch.optim.AdamW(
        [{"params": weights, "weight_decay": decay, "lr": lr}
         for (decay, lr), weights in groups.items()],
        lr=params.lr, fused=fused or None, foreach=None if fused else True)
    warmup = math.ceil(params.warmup_ratio * total_steps)
    return optimizer, get_linear_schedule_with_warmup(optimizer, warmup, total_steps)


def _layer_depths(model) -> dict[str, int]:
    """Parameter name -> layers below the top: 0 for the head and pooler, 1 for the last
    encoder layer, ..., n for the first, n + 1 for the embeddings. Encoder layers are
    found by the `.layer.<i>.` / `.layers.<i>.` naming that BERT-like models share."""
    layers = model.config.num_hidden_layers
    depths = {}
    for name, _ in model.named_parameters():
        found = re.search(r"\.layers?\.(\d+)\.", name)
        if found:
            depths[name] = layers - int(found.group(1))
        elif "embeddings" in name:
            depths[name] = layers + 1
    return depths


def new_state(model, params: TrainParams, examples: int, compute: Compute) -> TrainingState:
    """A fresh state for training `model` on `examples` training examples."""
    device, precision = compute.device, compute.precision
    steps_per_epoch = math.ceil(examples / params.batch_size)
    model.to(device)
    if device.type == "cpu":
        # PyTorch's CPU dropout mask costs ~a third of a step there (textclf.training.dropout).
        fast_dropout.install(model)
    if params.freeze_embeddings:
        # Token embeddings are half of a small model's weights: not updating them
        # saves their gradient, clipping and AdamW work (~10% of a CPU step).
        model.get_input_embeddings().weight.requires_grad_(False)
    optimizer, schedule = build_optimizer(model, params, steps_per_epoch * params.epochs, device)
    # fp16 needs loss scaling; bf16 has fp32's range and does not.
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    average = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(params.ema_decay))
               if params.ema_decay is not None else None)
    return TrainingState(model, optimizer, schedule, scaler, np.random.default_rng(params.seed),
                         average=average)
