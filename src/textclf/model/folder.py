"""`training_info.json`: the contract between `train` and every reader of a model folder.

`train` writes it beside the weights; evaluate, predict, serve and drift read it through
`TrainingInfo.load`, never as a raw dict. `FORMAT_VERSION` changes when a field changes
meaning; a reader refuses a newer format instead of guessing, and upgrades an older one.

Versions: 1 (textclf 0.1.x); 2 adds `calibration`, the temperature `train` fits on the
validation split (textclf.model.calibration), and `validation_split`, which of the
`data_sha256` files that split is (int8 is checked against fp32 on it:
textclf.model.int8_agreement). Version-1 and unversioned folders read as
uncalibrated (`calibration: null`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from textclf.errors import UserError

if TYPE_CHECKING:
    from textclf.model.calibration import Calibration

FILENAME = "training_info.json"
FORMAT_VERSION = 2


class ModelError(UserError):
    """A model cannot be found, verified or loaded."""


@dataclass(frozen=True)
class TrainingInfo:
    labels: list[str]                       # label id i -> labels[i]
    max_length: int                         # tokens per text, as in training
    base_model: str                         # model.name the weights started from
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # "model"/"train" sections
    data_sha256: dict[str, str] = field(default_factory=dict)  # split file -> sha256
    best_epoch: Optional[int] = None
    precision: str = "fp32"
    versions: dict[str, str] = field(default_factory=dict)     # torch, transformers, python
    calibration: Optional[dict[str, Any]] = None  # Calibration.to_dict(); None: uncalibrated
    validation_split: Optional[str] = None  # the data_sha256 key of the validation file
    format_version: int = FORMAT_VERSION

    def calibrator(self) -> Optional["Calibration"]:
        """The fitted calibration, or None for a folder without one (the probabilities are
        then the model's own)."""
        if self.calibration is None:
            return None
        from textclf.model.calibration import Calibration  # it imports ModelError from here

        return Calibration.from_dict(self.calibration, FILENAME)

    def save(self, folder: str | Path) -> None:
        payload = dataclasses.asdict(self)
        Path(folder, FILENAME).write_text(json.dumps(payload, indent=2, ensure_ascii=False)
                                          + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> "TrainingInfo":
        """Read and check a folder's training info; ModelError names what is wrong."""
        path = Path(folder, FILENAME)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelError(f"{folder}: no {FILENAME}; expected a model folder written by "
                             f"`textclf train`") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ModelError(f"{path}: not valid JSON ({err}); the model folder is damaged: "
                             f"re-run `dvc repro train` or `dvc checkout`") from None
        return cls.from_dict(raw, str(path))

    @classmethod
    def from_dict(cls, raw: Any, source: str) -> "TrainingInfo":
        if not isinstance(raw, dict):
            raise ModelError(f"{source}: expected a JSON object, found {type(raw).__name__}")
        version = raw.get("format_version")
        if version is None and "labels" in raw and "params" in raw:
            raw = _upgrade_unversioned(raw)
        elif version == 1:
            raw = {**raw, "format_version": FORMAT_VERSION}  # no calibration field: none
        elif version != FORMAT_VERSION:
            raise ModelError(f"{source}: format_version {version!r} is not one this textclf "
                             f"reads (expected 1 to {FORMAT_VERSION}); was it written by another "
                             f"version of textclf?")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - names)
        if unknown:
            raise ModelError(f"{source}: unknown field {unknown[0]!r}; expected fields: "
                             f"{', '.join(sorted(names))}")
        labels, max_length = raw.get("labels"), raw.get("max_length")
        if (not isinstance(labels, list) or len(labels) < 2
                or not all(isinstance(label, str) and label for label in labels)
                or len(set(labels)) != len(labels)):
            raise ModelError(f"{source}: labels must be a list of at least 2 distinct "
                             f"non-empty strings, found {labels!r}")
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1:
            raise ModelError(f"{source}: max_length must be a positive integer, "
                             f"found {max_length!r}")
        if not isinstance(raw.get("base_model"), str):
            raise ModelError(f"{source}: base_model must be a string, "
                             f"found {raw.get('base_model')!r}")
        if raw.get("calibration") is not None:
            from textclf.model.calibration import Calibration  # imports ModelError from here

            raw = {**raw, "calibration": Calibration.from_dict(raw["calibration"],
                                                               source).to_dict()}
        return cls(**raw)

    @classmethod
    def from_config(cls, config, max_length: int, source: str) -> "TrainingInfo":
        """Info for a Hugging Face classification folder that `textclf train` did not write:
        labels from `config.id2label`."""
        id2label = getattr(config, "id2label", None) or {}
        labels = [id2label[i] for i in sorted(id2label)]
        if len(labels) < 2:
            raise ModelError(f"{source}: no {FILENAME} and config.json has no id2label with "
                             f"at least 2 labels; expected a classification model folder")
        return cls(labels=[str(label) for label in labels], max_length=max_length,
                   base_model=str(getattr(config, "name_or_path", "") or source))


def _upgrade_unversioned(raw: dict) -> dict:
    """Model folders written before the format was versioned (textclf 0.1.0)."""
    params = raw.get("params", {})
    return {"labels": raw.get("labels"),
            "max_length": params.get("model", {}).get("max_length"),
            "base_model": params.get("model", {}).get("name", ""),
            "params": params, "data_sha256": raw.get("data_sha256", {}),
            "best_epoch": raw.get("best_epoch"), "precision": raw.get("precision", "fp32"),
            "versions": raw.get("versions", {}), "format_version": FORMAT_VERSION}
