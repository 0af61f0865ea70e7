"""Resumable training checkpoints.

DVC 3 has no checkpoints of its own (resuming belongs to the training code), and it
deletes a stage's outputs before running it, so checkpoints live outside the outputs:
in `$TEXTCLF_CHECKPOINT_DIR`, else `$XDG_CACHE_HOME/textclf/checkpoints` (by default
`~/.cache/textclf/checkpoints`). That is outside the git work tree, and it is the same
folder for workspace runs and for queued runs, which DVC runs in temporary copies.

A checkpoint is named by the fingerprint of what the run depends on (params, the
textclf code, the data files), so it is only ever used by a run that would compute the
same thing; a finished training removes its checkpoint.

When: at the end of an epoch once `interval_s` seconds have passed since the last one
(or since training started), and always when training is asked to stop (Ctrl-C,
SIGTERM). Saving after every epoch costs about a second per epoch on 2 cores (a deep
copy, then ~360 MB written beside the next epoch): most of the demo's 6-second epochs'
worth of work, for nothing a stop request would not also save. A hard kill (kill -9,
out of memory, power loss) loses at most the work since the last checkpoint:
`interval_s` plus the epoch in progress. Default 60 s; `$TEXTCLF_CHECKPOINT_INTERVAL`
or `textclf train --checkpoint-interval` sets it, 0 saves after every epoch.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import json
import os
import pickle
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from textclf.errors import UserError
from textclf.outputs import remove_stale_scratch

WEIGHTS = "weights "   # the data key of the model folder a run starts from (train.py)

# Keys that change how a run is driven, not what it computes.
NOT_FINGERPRINTED = {("train", "resume")}


@dataclass(frozen=True)
class RunFingerprint:
    params: dict[str, dict[str, Any]]   # "model"/"train" sections
    code: str                           # sha256 over the textclf package's source
    data: dict[str, str]                # data file -> sha256
    target: str                         # the model folder it trains, for explanations

    @property
    def digest(self) -> str:
        payload = json.dumps({"params": self.params, "code": self.code, "data": self.data},
                             sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:32]

    def differences(self, other: "RunFingerprint") -> list[str]:
        """What differs from `other`, in words: 'train.lr 0.0001 -> 0.0002', 'the code'."""
        found = []
        for section in sorted(set(self.params) | set(other.params)):
            mine, theirs = self.params.get(section, {}), other.params.get(section, {})
            for key in sorted(set(mine) | set(theirs)):
                if mine.get(key) != theirs.get(key):
                    found.append(f"{section}.{key} {theirs.get(key)!r} -> {mine.get(key)!r}")
        if self.code != other.code:
            found.append("the textclf code")
        changed = {key for key in set(self.data) | set(other.data)
                   if self.data.get(key) != other.data.get(key)}
        if any(key.startswith(WEIGHTS) for key in changed):
            found.append("the weights it starts from")
        if any(not key.startswith(WEIGHTS) for key in changed):
            found.append("the data")
        return found


def fingerprint_run(params: dict[str, dict[str, Any]], data_sha256: dict[str, str],
                    target: str) -> RunFingerprint:
    kept = {section: {k: v for k, v in values.items()
                      if (section, k) not in NOT_FINGERPRINTED}
            for section, values in params.items()}
    return RunFingerprint(kept, code_sha256(), dict(data_sha256), target)


def code_sha256() -> str:
    """sha256 over the source of the textclf modules this process has loaded: the code
    that trains (as the train stage's deps in dvc.yaml), not the whole package."""
    digest = hashlib.sha256()
    files = sorted(Path(module.__file__) for name, module in list(sys.modules.items())
                   if name.startswith("textclf.") and getattr(module, "__file__", None))
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def default_dir() -> Path:
    if os.environ.get("TEXTCLF_CHECKPOINT_DIR"):
        return Path(os.environ["TEXTCLF_CHECKPOINT_DIR"])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "textclf" / "checkpoints"


INTERVAL_ENV = "TEXTCLF_CHECKPOINT_INTERVAL"
DEFAULT_INTERVAL_S = 60.0


def default_interval() -> float:
    """Seconds between epoch-end checkpoints: $TEXTCLF_CHECKPOINT_INTERVAL, else 60."""
    value = os.environ.get(INTERVAL_ENV, "").strip()
    return parse_interval(value, f"${INTERVAL_ENV}") if value else DEFAULT_INTERVAL_S


def parse_interval(value: str, where: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not seconds >= 0 or seconds == float("inf"):
        raise UserError(f"{where}: expected seconds between checkpoints, a number >= 0 "
                        f"(0 = after every epoch), found {value!r}")
    return seconds


class CheckpointNotWritten(UserError):
    """The checkpoint folder refused the write (full, read-only); nothing half-written
    is left in it."""


class _RefusedWrite(io.RawIOBase):
    """`file` for torch.save, keeping the OSError of a write the disk refused (ENOSPC,
    EFBIG), which torch itself reports only as `RuntimeError: ... unexpected pos`."""

    def __init__(self, file) -> None:
        self.file, self.refused = file, None

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as err:
            self.refused = err
            raise


def _save(path: str, payload: dict) -> None:
    """torch.save into `path`; a refused write raises its OSError."""
    with open(path, "wb") as file:
        writer = _RefusedWrite(file)
        try:
            torch.save(payload, writer)
        except RuntimeError:
            if writer.refused is None:
                raise
            raise writer.refused from None


class DamagedCheckpoint(Exception):
    """This run's checkpoint cannot be read back; it has been removed (train starts fresh)."""


class _Background:
    """At most one checkpoint write in flight, what it raised, and when the last began."""

    def __init__(self, now: float) -> None:
        self.thread: threading.Thread | None = None
        self.failure: BaseException | None = None
        self.last_saved = now


@dataclass(frozen=True)
class CheckpointStore:
    folder: Path
    run: RunFingerprint
    writable: bool = True   # False on all but one of several training processes
    interval_s: float = 0.0  # epoch-end checkpoints at most this often (see module doc)
    clock: Callable[[], float] = dataclasses.field(default=time.monotonic, compare=False,
                                                   repr=False)
    background: _Background = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        # The interval counts from when the store is made, that is when training starts.
        object.__setattr__(self, "background", _Background(self.clock()))

    @property
    def path(self) -> Path:
        return self.folder / f"{self.run.digest}.pt"

    def find(self) -> tuple[Path | None, str]:
        """This run's checkpoint if there is one, and a sentence saying what was found."""
        if self.path.is_file():
            return self.path, f"resuming from checkpoint {self.path}"
        stale = self._latest_other()
        if stale is None:
            return None, "no checkpoint to resume from"
        return None, (f"not resuming from checkpoint {stale[0]}: it belongs to another run "
                      f"(changed: {'; '.join(self.run.differences(stale[1]))}); starting fresh")

    def _latest_other(self) -> tuple[Path, RunFingerprint] | None:
        """The newest checkpoint for the same model folder made by another run."""
        candidates = []
        for sidecar in self.folder.glob("*.json"):
            try:
                other = RunFingerprint(**json.loads(sidecar.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError):
                continue
            checkpoint = sidecar.with_suffix(".pt")
            if other.target == self.run.target and checkpoint.is_file():
                candidates.append((checkpoint.stat().st_mtime, checkpoint, other))
        if not candidates:
            return None
        _, checkpoint, other = max(candidates, key=lambda c: c[0])
        return checkpoint, other

    def due(self) -> bool:
        """Whether an epoch-end checkpoint is due: `interval_s` passed since the last."""
        return self.clock() - self.background.last_saved >= self.interval_s

    def save(self, state: dict) -> None:
        """Write atomically: a process killed while saving leaves the previous checkpoint."""
        self.wait()
        self.background.last_saved = self.clock()
        self._write(state)

    def save_in_background(self, state: dict) -> None:
        """`save` on a thread of its own, so that the next epoch starts while the checkpoint
        (~360 MB for MiniLM with AdamW) is written, about a second per epoch on 2 cores:
        torch.save lets go of the GIL while it writes tensor data. `state` is copied first,
        as training goes on changing the tensors it refers to. One write at a time."""
        if not self.writable:
            return
        self.wait()
        self.background.last_saved = self.clock()
        snapshot = copy.deepcopy(state)

        def write() -> None:
            try:
                self._write(snapshot)
            except BaseException as err:  # noqa: BLE001 - raised again by wait()
                self.background.failure = err

        self.background.thread = threading.Thread(target=write, name="checkpoint-writer")
        self.background.thread.start()

    def wait(self) -> None:
        """Until a background save has finished; then raise what it raised, if anything."""
        if self.background.thread is not None:
            self.background.thread.join()
            self.background.thread = None
        failure, self.background.failure = self.background.failure, None
        if failure is not None:
            raise failure

    def _write(self, state: dict) -> None:
        if not self.writable:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            remove_stale_scratch(self.path)     # what a save cut short by a kill left behind
            fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.tmp-", dir=self.folder)
            os.close(fd)
            try:
                _save(name, {"saved_at": time.time(), "state": state})
                # On disk before the rename: a power cut must not leave a renamed, empty file.
                with open(name, "rb") as written:
                    os.fsync(written.fileno())
                os.replace(name, self.path)
            except BaseException:
                Path(name).unlink(missing_ok=True)
                raise
            self.path.with_suffix(".json").write_text(
                json.dumps(dataclasses.asdict(self.run), default=str), encoding="utf-8")
        except OSError as err:              # a full disk, a file-size limit, no permission
            raise CheckpointNotWritten(
                f"checkpoint folder {self.folder}: could not write {self.path.name} "
                f"({err.strerror or err}); make room there or set $TEXTCLF_CHECKPOINT_DIR "
                f"to another folder") from None

    def load(self) -> dict:
        """The saved training state. A file that cannot be read back (truncated by a full
        disk, damaged on it) is removed and DamagedCheckpoint raised: training starts
        fresh instead of failing every `dvc repro` until someone deletes it by hand."""
        try:
            # weights_only: a checkpoint file is data; never run code from it.
            return torch.load(self.path, map_location="cpu", weights_only=True)["state"]
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, KeyError,
                ValueError, TypeError) as err:
            self._discard()
            reason = " ".join(str(err).split())[:160] or type(err).__name__
            raise DamagedCheckpoint(f"checkpoint {self.path} is damaged ({reason}); "
                                    f"removed it") from err

    def remove(self) -> None:
        self.wait()
        if not self.writable:
            return
        self._discard()

    def _discard(self) -> None:
        self.path.unlink(missing_ok=True)
        self.path.with_suffix(".json").unlink(missing_ok=True)
        remove_stale_scratch(self.path)
