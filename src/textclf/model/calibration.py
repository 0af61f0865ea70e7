"""Calibrated probabilities: temperature scaling (Guo et al. 2017, "On Calibration of Modern
Neural Networks").

One parameter T > 0 divides the logits: softmax(z / T). It keeps every predicted label
(the order of a row's logits does not change) and is fitted on the validation split by
minimising its negative log-likelihood. `train` fits it with the best epoch's weights and
records it in training_info.json (textclf.model.folder); readers get it from
`TrainingInfo.calibrator()`.

It works on probabilities, not logits: log p equals the logits up to a per-row constant,
which softmax ignores. So it applies alike to what PyTorch and ONNX Runtime return.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from textclf.model.folder import ModelError

METHODS = ("temperature",)
# Beyond these, the fit is at a bound: T -> 0 when the validation split is separated
# perfectly, T -> inf when the predictions carry no information.
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 20.0
# log(0) guard: the smallest float32 above 0, so that log p is exact for every probability
# a float32 softmax returns (it underflows to 0 only for a logit gap above ~104). 1e-12
# capped gaps at 27.6: a calibrated 0.984 where softmax(z / T) gave 0.998.
_FLOOR = float(np.finfo(np.float32).smallest_subnormal)


def _log_probs(probs: np.ndarray) -> np.ndarray:
    """(N, C) log probabilities in float64: the logits up to a per-row constant."""
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), _FLOOR, None))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class Calibration:
    """A fitted temperature; `apply` turns a model's probabilities into calibrated ones."""
    temperature: float
    method: str = "temperature"        # Guo et al. 2017

    def apply(self, probs: np.ndarray) -> np.ndarray:
        """(N, C) probabilities in, calibrated (N, C) float32 out: softmax(log p / T)."""
        probs = np.asarray(probs)
        if probs.size == 0:
            return probs.astype(np.float32)
        return _softmax(_log_probs(probs) / self.temperature).astype(np.float32)

    def to_dict(self) -> dict:
        return {"method": self.method, "temperature": self.temperature}

    @classmethod
    def from_dict(cls, raw: Any, source: str) -> "Calibration":
        """Check a recorded calibration; ModelError names the field that is wrong."""
        if not isinstance(raw, dict):
            raise ModelError(f"{source}: calibration must be an object with method and "
                             f"temperature, found {raw!r}")
        unknown = sorted(set(raw) - {"method", "temperature"})
        if unknown:
            raise ModelError(f"{source}: unknown field calibration.{unknown[0]}; expected "
                             f"calibration.method and calibration.temperature")
        method = raw.get("method", "temperature")
        if method not in METHODS:
            raise ModelError(f"{source}: calibration.method must be one of "
                             f"{', '.join(METHODS)}, found {method!r}")
        temperature = raw.get("temperature")
        if (not isinstance(temperature, (int, float)) or isinstance(temperature, bool)
                or not math.isfinite(temperature) or temperature <= 0):
            raise ModelError(f"{source}: calibration.temperature must be a positive number, "
                             f"found {temperature!r}")
        return cls(temperature=float(temperature), method=method)


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> Calibration:
    """The temperature that minimises the negative log-likelihood of `labels` (int ids)
    under softmax(log probs / T).

    In b = 1/T the NLL is convex (a log-sum-exp of b z minus b z_y), and its derivative,
    mean(E_softmax(b z)[z] - z_y), increases with b: bisection on its sign finds the one
    minimum, exactly and without a solver."""
    z = _log_probs(probs)
    labels = np.asarray(labels)
    if len(labels) == 0:
        raise ValueError("fit_temperature: no examples to fit on")
    z_true = z[np.arange(len(labels)), labels]

    def slope(b: float) -> float:
        return float(((_softmax(b * z) * z).sum(axis=1) - z_true).mean())

    low, high = 1 / MAX_TEMPERATURE, 1 / MIN_TEMPERATURE
    if slope(low) >= 0:
        return Calibration(MAX_TEMPERATURE)
    if slope(high) <= 0:
        return Calibration(MIN_TEMPERATURE)
    for _ in range(60):  # on log b: the bracket spans 2.6 decades; 60 halvings reach 1e-17
        middle = math.sqrt(low * high)
        if slope(middle) < 0:
            low = middle
        else:
            high = middle
    return Calibration(float(1 / math.sqrt(low * high)))
