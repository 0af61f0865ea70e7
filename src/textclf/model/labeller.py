"""The Labeller: a model folder loaded once to label texts, with the engine that computes.

Every command that labels texts (`evaluate`, `predict`, `serve`, `drift`) builds one
`Labeller.load(folder, precision)` and asks it for `.probabilities(texts)`: the device, the
early check that int8 can run here, the model folder, the engine and the precision the
request resolves to are decided once, here, so the four cannot drift apart (the drift
report compares confidences from the engine `serve` answers with).

Engines (textclf.model.engines): PyTorch in fp32, bf16 or fp16, or ONNX Runtime with int8
weights. `auto` resolves as `predict` and `serve` need it (bf16 where it pays, else int8
where it measures faster than fp32 and keeps fp32's labels on the model's validation split,
textclf.model.int8_agreement, else fp32); `evaluate`'s `auto` scores the PyTorch model
(`auto_int8=False`) and takes int8 only when asked by name.

Probabilities are calibrated by default, on every engine alike: the temperature `train`
fitted on the validation split (textclf.model.calibration) is applied to whatever the
engine returns; `calibrated=False` gives the raw ones.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from textclf.errors import UserError
from textclf.model.batching import encode
from textclf.model import int8_agreement
from textclf.model.calibration import Calibration
from textclf.model.engines import onnx_int8, pytorch
from textclf.model.folder import TrainingInfo
from textclf.model.loading import load_classifier, quiet_transformers
from textclf.model.precision import (LayerShape, choose_device, choose_labelling_precision,
                                     choose_precision)


@dataclass(frozen=True)
class Labeller:
    """A classifier ready to label texts: the model and tokenizer, its TrainingInfo, and
    the engine chosen for it (`int8` is the ONNX Runtime session, or None for PyTorch in
    `precision`)."""
    model: torch.nn.Module
    tokenizer: object
    info: TrainingInfo
    folder: Path
    device: torch.device
    precision: str                        # fp32, bf16, fp16 or int8: what computes
    int8: onnx_int8.Int8Classifier | None
    batch_size: int = 64
    calibration: Calibration | None = None  # applied to every engine's probabilities

    @classmethod
    def load(cls, folder: str | Path, precision: str = "auto", *, batch_size: int = 64,
             threads: int | None = None, auto_int8: bool = True,
             calibrated: bool = True) -> Labeller:
        """Load `folder` and choose its engine for `precision` (one of PRECISIONS).
        `threads`: ONNX Runtime's intra-op threads (default: torch's). `calibrated`: apply
        the temperature `train` fitted (textclf.model.calibration), where the folder has
        one; False gives the model's raw probabilities."""
        quiet_transformers()
        device = choose_device()
        if precision == "int8":  # fail before the model loads
            onnx_int8.require_onnxruntime()
            check_cpu(device)
        folder = Path(folder)
        model, tokenizer, info = load_classifier(folder, device)
        model.to(device)
        shape = LayerShape.of(model.config, batch_size)
        resolved = (labelling_precision(device, precision, shape) if auto_int8
                    else choose_precision(device, precision, shape=shape))
        if resolved == "int8" and precision == "auto":
            try:                # no int8 model built that auto could not use unmeasured
                int8_agreement.measurable(info)
            except int8_agreement.Unmeasurable as reason:
                resolved = unmeasured(reason)
        resolved, int8 = engine_for(model, folder, info.max_length, resolved, precision,
                                    threads)
        if int8 is not None and precision == "auto":
            resolved, int8 = faithful_or_fp32(model, tokenizer, info, int8, batch_size)
        return cls(model, tokenizer, info, folder, device, resolved, int8, batch_size,
                   info.calibrator() if calibrated else None)

    @property
    def labels(self) -> list[str]:
        return list(self.info.labels)

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities (N, C) of `texts`, in input order: calibrated where the
        Labeller was loaded so and the folder has a calibration."""
        ids = encode(self.tokenizer, texts, self.info.max_length)
        pad_id = self.tokenizer.pad_token_id
        if self.int8 is not None:
            probs = onnx_int8.predict_proba(self.int8, ids, pad_id, self.batch_size)
        else:
            probs = pytorch.predict_proba(self.model, ids, pad_id, self.batch_size,
                                          self.device, self.precision)
        return probs if self.calibration is None else self.calibration.apply(probs)


def top_labels(probs: np.ndarray, labels: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Each row's most probable label and its probability, for (N, C) `probs`."""
    return [labels[i] for i in probs.argmax(axis=1)], probs.max(axis=1)


def rounded(probs: np.ndarray) -> np.ndarray:
    """Probabilities as `predict` writes them and `serve` answers: float32 rounded to 6
    digits; the float64 rounding after it only drops float32's binary tail (0.12345699...
    -> 0.123457), so that JSON shows 6 digits."""
    return np.round(np.round(probs, 6).astype(np.float64), 6)


def check_cpu(device: torch.device) -> None:
    """int8 is a CPU path: on an accelerator bf16/fp16 is the faster choice."""
    if device.type != "cpu":
        raise UserError(f"--precision int8 runs on a CPU only, but this machine computes on "
                        f"{device.type}; expected --precision auto (or fp32/bf16/fp16) here")


def labelling_precision(device: torch.device, requested: str,
                        shape: LayerShape | None = None) -> str:
    """The precision predict and serve label with: `choose_precision`'s, except that
    `auto` on a CPU may also give int8 (textclf.model.precision.choose_labelling_precision)."""
    if requested != "auto" or device.type != "cpu":
        return choose_precision(device, requested, shape=shape)
    return choose_labelling_precision(onnx_int8.int8_seconds)


def engine_for(model, folder: Path, max_length: int, precision: str, requested: str,
               threads: int | None = None) -> tuple[str, onnx_int8.Int8Classifier | None]:
    """(precision, int8 session or None) for resolved `precision`. Where `auto` chose int8
    but the model cannot go through ONNX Runtime (an architecture the exporter cannot trace,
    an unwritable cache), PyTorch in fp32 answers instead and stderr says why; an explicit
    `--precision int8` fails instead."""
    if precision != "int8":
        return precision, None
    try:
        return precision, onnx_int8.load_int8(model, folder, max_length, threads)
    except UserError as err:      # e.g. a read-only cache folder
        if requested == "int8":
            raise
        print(f"int8: {err}; using PyTorch fp32", file=sys.stderr)
        return "fp32", None
    except Exception as err:  # noqa: BLE001 - the exporter raises many types
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        if requested == "int8":
            raise UserError(f"--precision int8: cannot build the int8 model of {folder} "
                            f"({reason}); expected a model torch.onnx can export, or use "
                            f"--precision fp32") from None
        print(f"int8: cannot build it for {folder} ({reason}); using PyTorch fp32",
              file=sys.stderr)
        return "fp32", None


def unmeasured(reason: int8_agreement.Unmeasurable) -> str:
    print(f"int8: not used: {reason}, so its agreement with fp32 is unmeasured; "
          f"labelling with PyTorch fp32 (--precision int8 forces it)", file=sys.stderr)
    return "fp32"


def faithful_or_fp32(model, tokenizer, info: TrainingInfo, int8: onnx_int8.Int8Classifier,
                     batch_size: int) -> tuple[str, onnx_int8.Int8Classifier | None]:
    """`auto`'s int8, kept only where it gives fp32's answers on the model's validation
    split (textclf.model.int8_agreement); else PyTorch fp32, and stderr says why."""
    try:
        agreement, measured = int8_agreement.agreement_for(model, tokenizer, info, int8,
                                                           batch_size)
    except int8_agreement.Unmeasurable as reason:
        return unmeasured(reason), None
    if measured:
        print(f"int8: measured against fp32: {agreement.summary()}", file=sys.stderr)
    if not agreement.accepted:
        print(f"int8: not used: it changes answers ({agreement.label_agreement:.1%} of "
              f"validation labels as fp32, largest recall loss "
              f"{agreement.worst_class[1] * 100:.1f} points; needs at least "
              f"{int8_agreement.MIN_LABEL_AGREEMENT:.1%} and at most "
              f"{int8_agreement.MAX_RECALL_DROP * 100:g}); labelling with PyTorch fp32",
              file=sys.stderr)
        return "fp32", None
    print(f"int8: precision auto chose ONNX Runtime with int8 weights (faster than fp32 "
          f"on this CPU, {agreement.label_agreement:.1%} of validation labels as fp32; "
          f"--precision fp32 keeps PyTorch)", file=sys.stderr)
    return "int8", int8
