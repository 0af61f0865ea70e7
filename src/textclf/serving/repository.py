"""The model a server answers with, and how a new version replaces it without downtime.

`load_model` reads a model folder into a `LoadedModel` (labeller plus what the server says
about it). `ModelRepository.reload` reads the folder again, from disk as it is now (after
`dvc checkout`, `dvc pull` or a copy of a new version into it), on a thread while the old
version keeps answering, then hands the new one to the batcher between two batches: no
request fails and each answer's labels and `model_version` come from the model that
computed it. A folder that does not load (half copied, wrong files) leaves the old
version serving, and the refusal says why. Triggered by the Open Inference Protocol's
model repository extension (`POST /v2/repository/models/{name}/load`) or SIGHUP.
"""

from __future__ import annotations

import asyncio
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from textclf.errors import UserError
from textclf.serving.protocol import ServedModel, ServeError


@dataclass(frozen=True)
class ModelSource:
    """Where the served model comes from and how to load it (serve's flags)."""
    folder: Path
    name: str
    precision: str = "auto"
    batch_size: int = 64
    threads: int = 1
    calibrated: bool = True
    version: Optional[str] = None      # --model-version: reported instead of the computed


@dataclass(frozen=True)
class LoadedModel:
    """A loaded model version: the batcher's engine."""
    served: ServedModel
    labeller: object        # textclf.model.labeller.Labeller
    precision: str

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        return self.labeller.probabilities(texts)


def load_model(source: ModelSource) -> LoadedModel:
    from textclf.model.labeller import Labeller

    labeller = Labeller.load(source.folder, source.precision, batch_size=source.batch_size,
                             threads=source.threads, calibrated=source.calibrated)
    served = ServedModel(name=source.name, version=model_version(source.folder, source.version),
                         labels=tuple(labeller.labels), max_length=labeller.info.max_length,
                         calibrated=labeller.calibration is not None)
    return LoadedModel(served, labeller, f"{labeller.device.type} {labeller.precision}")


def model_version(folder: Path, override: Optional[str] = None) -> str:
    """`sha256:<weights>[+git:<commit>]`, or `override` as given."""
    from textclf.model.loading import weights_version

    if override:
        return override
    version = weights_version(folder)
    revision = git_revision(folder)
    return f"{version}+git:{revision}" if revision else version


def git_revision(folder: Path) -> Optional[str]:
    """HEAD of the git repository holding `folder`, or None outside one (or without git)."""
    try:
        result = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


class ModelRepository:
    """The served model's source, the version answering now, and its replacement."""

    def __init__(self, source: ModelSource, current: LoadedModel, batcher, metrics=None):
        self.source = source
        self.current = current
        self._batcher = batcher
        self._metrics = metrics
        self._loading = asyncio.Lock()
        if metrics is not None:
            self._tell_metrics(current)

    async def reload(self) -> LoadedModel:
        """Load the folder again and answer with it from the next batch on; ServeError 409
        (the old version still answering) if a load is under way or the folder is broken."""
        if self._loading.locked():
            raise ServeError(409, f"model {self.source.name!r}: a load is already under way; "
                                  f"try again when it ends")
        async with self._loading:
            old = self.current
            try:
                new = await asyncio.to_thread(load_model, self.source)
            except (UserError, OSError, ValueError, RuntimeError) as err:
                if self._metrics is not None:
                    self._metrics.loads.labels("failed").inc()
                raise ServeError(409, f"model {self.source.name!r}: could not load "
                                      f"{self.source.folder}: {err}; still serving "
                                      f"{old.served.version}") from None
            self.current = new
            self._batcher.replace(new)
            if self._metrics is not None:
                self._metrics.loads.labels("ok").inc()
                self._tell_metrics(new)
            return new

    def _tell_metrics(self, model: LoadedModel) -> None:
        self._metrics.serving(model.served.name, model.served.version, model.precision,
                              model.served.labels)
