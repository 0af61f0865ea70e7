"""Whether int8 keeps a model's answers: measured on the model's own validation split.

`precision: auto` labels with ONNX Runtime int8 only where, for this model, int8 gives the
same label as fp32 on at least MIN_LABEL_AGREEMENT of the validation texts and no class
loses more than MAX_RECALL_DROP of recall (against the true labels). Speed alone is not
enough: int8 moved 7% of labels on texts unlike the training data on an AVX2-only CPU.

The measurement runs once, when the int8 model is built (or first used by `auto`), and is
cached beside it (`<int8 model>.agreement.json`): the verdict belongs to those int8
weights on this CPU's kernels, for that validation file. It is printed once, when
measured. Where the validation split is not here (a model folder copied alone, a
Hugging Face folder `textclf train` did not write) nothing is measured and `auto` stays
on fp32, saying why; `--precision int8` still takes int8 unchecked.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from textclf.data.dataset import fingerprint, read_split
from textclf.model.batching import encode
from textclf.model.engines import onnx_int8, pytorch
from textclf.model.folder import TrainingInfo
from textclf.outputs import atomic_file, exclusive

MIN_LABEL_AGREEMENT = 0.995  # share of validation labels int8 must give as fp32 does
MAX_RECALL_DROP = 0.01       # largest loss of one class's recall (fraction, 0.01 = 1 point)
MAX_TEXTS = 2000             # validation texts measured (a seeded sample of larger splits)


@dataclass(frozen=True)
class Agreement:
    """int8 against fp32 on `texts` validation texts of `split` (sha256 `split_sha256`)."""
    split: str
    split_sha256: str
    texts: int
    label_agreement: float                 # share of texts with the same label
    recall_drop: dict[str, float]          # class -> fp32 recall - int8 recall
    max_probability_difference: float      # over all texts and classes

    def __post_init__(self):
        """A cache file edited or damaged into other types reads as no measurement."""
        numbers = (self.label_agreement, self.max_probability_difference,
                   *(self.recall_drop.values() if isinstance(self.recall_drop, dict) else ()))
        if (not isinstance(self.recall_drop, dict) or not self.recall_drop
                or not isinstance(self.texts, int)
                or not all(isinstance(n, (int, float)) and not isinstance(n, bool)
                           for n in numbers)):
            raise TypeError("not an agreement measurement")

    @property
    def worst_class(self) -> tuple[str, float]:
        label = max(self.recall_drop, key=self.recall_drop.get)
        return label, self.recall_drop[label]

    @property
    def accepted(self) -> bool:
        return (self.label_agreement >= MIN_LABEL_AGREEMENT
                and self.worst_class[1] <= MAX_RECALL_DROP + 1e-12)

    def summary(self) -> str:
        label, drop = self.worst_class
        return (f"{self.label_agreement:.1%} of labels as fp32 on {self.texts} validation "
                f"texts ({self.split}), largest recall loss {drop * 100:.1f} points "
                f"({label!r}), probabilities within {self.max_probability_difference:.3f}")

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Agreement | None:
        """The cached measurement, or None where there is none or it does not read."""
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None


def measure(fp32: np.ndarray, int8: np.ndarray, true_ids: Sequence[int],
            labels: Sequence[str], split: str, split_sha256: str) -> Agreement:
    """Compare (N, C) probabilities of the same texts; `true_ids` are their label ids."""
    fp32_ids, int8_ids = fp32.argmax(axis=1), int8.argmax(axis=1)
    true_ids = np.asarray(true_ids)
    drops = {}
    for i, label in enumerate(labels):
        rows = true_ids == i
        if rows.any():
            drops[label] = float((fp32_ids[rows] == i).mean() - (int8_ids[rows] == i).mean())
    return Agreement(split, split_sha256, len(true_ids),
                     float((fp32_ids == int8_ids).mean()), drops,
                     float(np.abs(fp32 - int8).max()))


def sample_rows(count: int, limit: int = MAX_TEXTS, seed: int = 0) -> np.ndarray:
    """All row indices up to `limit`, else `limit` of them drawn with a fixed seed."""
    if count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, limit, replace=False))


def cache_path(int8_model: Path) -> Path:
    return int8_model.with_name(int8_model.name.removesuffix(".onnx") + ".agreement.json")


class Unmeasurable(Exception):
    """Why the agreement cannot be measured here (said on stderr; `auto` keeps fp32)."""


def measurable(info: TrainingInfo) -> tuple[Path, str]:
    """(validation split, its sha256) that the agreement is measured on, or Unmeasurable
    saying why not: checked before an int8 model is built for `auto`, which could not use
    it unmeasured."""
    split = info.validation_split
    if not split:
        raise Unmeasurable("the model folder does not name its validation split (not "
                           "written by this version of `textclf train`)")
    path = Path(split)
    if not path.is_file():
        raise Unmeasurable(f"its validation split {split} is not here (run in the project "
                           f"after `dvc pull`, or measure where it is)")
    digest = fingerprint([path])[str(path)]
    if info.data_sha256.get(split, digest) != digest:
        raise Unmeasurable(f"{split} is not the validation split the model was trained "
                           f"with (its sha256 differs from training_info.json's)")
    return path, digest


def agreement_for(model, tokenizer, info: TrainingInfo, int8: onnx_int8.Int8Classifier,
                  batch_size: int = 64) -> tuple[Agreement, bool]:
    """(agreement, measured now) for `int8`, the int8 model of `model`: read from the cache
    beside it, or measured on the validation split `info` names and cached.
    Raises Unmeasurable where that split is not here or changed since training."""
    path, digest = measurable(info)
    split = str(path)
    cache = cache_path(int8.path)
    with exclusive(cache):  # parallel runs (queue workers, replicas) measure once
        known = Agreement.load(cache)
        if known is not None and known.split_sha256 == digest:
            return known, False
        frame = read_split(path)
        label_ids = {label: i for i, label in enumerate(info.labels)}
        frame = frame[frame["label"].isin(label_ids)]
        frame = frame.iloc[sample_rows(len(frame))]
        if frame.empty:
            raise Unmeasurable(f"{split} has no rows with the model's labels")
        ids = encode(tokenizer, frame["text"].tolist(), info.max_length)
        pad_id = tokenizer.pad_token_id
        fp32 = pytorch.predict_proba(model, ids, pad_id, batch_size, torch.device("cpu"),
                                     "fp32")
        quantized = onnx_int8.predict_proba(int8, ids, pad_id, batch_size)
        agreement = measure(fp32, quantized, frame["label"].map(label_ids).to_numpy(),
                            info.labels, split, digest)
        try:
            with atomic_file(cache) as scratch:
                agreement.save(scratch)
        except OSError:
            pass  # an unwritable cache only costs the measurement next time
    return agreement, True
