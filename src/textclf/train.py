"""Stage `train`: fine-tune a transformer classifier and keep its best epoch."""

from __future__ import annotations

import argparse
import dataclasses
import math
import platform
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from textclf.batching import encode, length_grouped_batches, pad_batch
from textclf.dataset import fingerprint, read_labels, read_split
from textclf.errors import exits_on_user_error
from textclf.metrics import macro_f1
from textclf.modeling import (attention_for, autocast, choose_device, choose_precision,
                              load_pretrained, predict_proba, quiet_transformers,
                              save_classifier)
from textclf.outputs import atomic_dir
from textclf.params import TrainParams, load_params


@dataclass(frozen=True)
class EpochResult:
    epoch: int
    train_loss: float
    val_accuracy: float
    val_f1_macro: float


@dataclass(frozen=True)
class Encoded:
    """A split as token ids and label ids."""
    ids: list[list[int]]
    labels: np.ndarray


def build_optimizer(model, params: TrainParams, total_steps: int, device: torch.device):
    """AdamW (no decay on biases and LayerNorm) with linear warm-up, then linear decay."""
    from transformers import get_linear_schedule_with_warmup

    decay, no_decay = [], []
    for name, weight in model.named_parameters():
        if weight.requires_grad:
            (no_decay if weight.ndim < 2 else decay).append(weight)
    # The fused kernel does AdamW's arithmetic in one pass over memory; on a CPU
    # the plain loop spent a quarter of each step there (benchmarks/README.md).
    fused = device.type in ("cpu", "cuda")
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": params.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=params.lr,
                                  fused=fused or None, foreach=None if fused else True)
    warmup = math.ceil(params.warmup_ratio * total_steps)
    return optimizer, get_linear_schedule_with_warmup(optimizer, warmup, total_steps)


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


def fit(model, train: Encoded, val: Encoded, params: TrainParams, pad_id: int,
        device: torch.device, precision: str,
        on_epoch: Callable[[EpochResult], None] = lambda result: None,
        progress: bool = True) -> list[EpochResult]:
    """Train for `params.epochs`; leave the model with its best weights by validation macro-F1."""
    rng = np.random.default_rng(params.seed)
    steps_per_epoch = math.ceil(len(train.ids) / params.batch_size)
    model.to(device)
    if params.freeze_embeddings:
        # Token embeddings are half of a small model's weights: not updating them
        # saves their gradient, clipping and AdamW work (~10% of a CPU step).
        model.get_input_embeddings().weight.requires_grad_(False)
    optimizer, schedule = build_optimizer(model, params, steps_per_epoch * params.epochs, device)
    trainable = [w for w in model.parameters() if w.requires_grad]
    # fp16 needs loss scaling; bf16 has fp32's range and does not.
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    num_labels = model.config.num_labels
    history, best_state, best_f1 = [], None, -1.0
    for epoch in range(1, params.epochs + 1):
        model.train()
        total_loss = torch.zeros((), device=device)
        bar = tqdm(make_batches(train, params.batch_size, pad_id, rng), disable=not progress,
                   desc=f"epoch {epoch}/{params.epochs}", unit="batch")
        for batch in bar:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with autocast(device, precision):
                loss = model(**batch).loss
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(trainable, params.max_grad_norm,
                                           foreach=True)
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            total_loss += loss.detach().float()
        probs = predict_proba(model, val.ids, pad_id, max(64, params.batch_size), device,
                              precision)
        predicted = probs.argmax(axis=1)
        result = EpochResult(epoch=epoch,
                             train_loss=float(total_loss) / len(bar),
                             val_accuracy=float((predicted == val.labels).mean()),
                             val_f1_macro=macro_f1(val.labels, predicted, range(num_labels)))
        history.append(result)
        on_epoch(result)
        if result.val_f1_macro > best_f1:
            best_f1 = result.val_f1_macro
            best_state = {k: v.detach().to("cpu", copy=True)
                          for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return history


def encode_split(tokenizer, frame, labels: Sequence[str], max_length: int) -> Encoded:
    label_ids = {label: i for i, label in enumerate(labels)}
    return Encoded(ids=encode(tokenizer, frame["text"].tolist(), max_length),
                   labels=frame["label"].map(label_ids).to_numpy(dtype=np.int64))


@exits_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="textclf train", description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--train", required=True, help="training split (Parquet)")
    parser.add_argument("--val", required=True, help="validation split (Parquet)")
    parser.add_argument("--labels", required=True, help="labels.json from prepare")
    parser.add_argument("--model-dir", required=True, help="output folder for the model")
    parser.add_argument("--live-dir", required=True, help="dvclive folder for metrics/plots")
    args = parser.parse_args(argv)

    import transformers
    from dvclive import Live

    params = load_params(args.params)
    quiet_transformers()
    transformers.set_seed(params.train.seed)
    labels = read_labels(args.labels)
    device = choose_device()
    tokenizer, model = load_pretrained(params.model.name, labels,
                                       attention_for(device, params.model.max_length))
    train = encode_split(tokenizer, read_split(args.train), labels, params.model.max_length)
    val = encode_split(tokenizer, read_split(args.val), labels, params.model.max_length)
    precision = choose_precision(device, params.train.precision)
    print(f"train: {params.model.name} on {device.type} ({precision}), "
          f"{len(train.ids)} train / {len(val.ids)} val examples, {len(labels)} labels")

    with atomic_dir(args.live_dir) as live_dir, atomic_dir(args.model_dir) as model_dir:
        with Live(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None) as live:
            def log_epoch(result: EpochResult) -> None:
                live.log_metric("train/loss", result.train_loss)
                live.log_metric("val/accuracy", result.val_accuracy)
                live.log_metric("val/f1_macro", result.val_f1_macro)
                live.next_step()
                print(f"epoch {result.epoch}: loss {result.train_loss:.4f}, val accuracy "
                      f"{result.val_accuracy:.4f}, val macro-F1 {result.val_f1_macro:.4f}")

            history = fit(model, train, val, params.train, tokenizer.pad_token_id, device,
                          precision, on_epoch=log_epoch)
            best = max(history, key=lambda r: r.val_f1_macro)
            live.summary.update({"best_epoch": best.epoch,
                                 "best": {"val_accuracy": best.val_accuracy,
                                          "val_f1_macro": best.val_f1_macro}})
        save_classifier(model.cpu(), tokenizer, model_dir, {
            "params": {"model": dataclasses.asdict(params.model),
                       "train": dataclasses.asdict(params.train)},
            "labels": labels,
            "data_sha256": fingerprint([args.train, args.val, args.labels]),
            "best_epoch": best.epoch,
            "device": device.type,
            "precision": precision,
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "python": platform.python_version()},
        })
    print(f"train: best epoch {best.epoch} (val macro-F1 {best.val_f1_macro:.4f}) "
          f"saved to {args.model_dir}")


if __name__ == "__main__":
    main()
