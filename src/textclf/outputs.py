"""Writing outputs so that a failed stage leaves nothing half-written behind."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

from textclf.errors import UserError


def check_outputs(outputs: Sequence[tuple[str, str | Path]],
                  inputs: Sequence[tuple[str, str | Path]] = ()) -> None:
    """Refuse, before any work is done, outputs that would destroy an input or fail only
    once the work is done: an output that is one of `inputs` (the same file, by any path),
    two outputs at one path, an output that is a folder, or one whose folder cannot be
    made (a file in the way) or written. (flag, path) pairs; a flag names the path in the
    one-line error."""
    claimed: dict[Path, str] = {}
    for flag, path in outputs:
        path = Path(path)
        if path.is_dir():
            raise UserError(f"{flag} {path}: is a folder; expected a file path to write")
        for input_flag, source in inputs:
            if same_file(path, Path(source)):
                raise UserError(f"{flag} {path}: is the {input_flag} file; expected another "
                                f"path, so that the input is never overwritten")
        key = path.resolve()
        if key in claimed:
            raise UserError(f"{flag} {path}: is also the path of {claimed[key]}; expected a "
                            f"path of its own for each output")
        claimed[key] = flag
        folder = existing_ancestor(path.parent)
        if not folder.is_dir():
            raise UserError(f"{flag} {path}: {folder} is a file, not a folder; expected a "
                            f"path whose folders exist or can be made")
        try:      # a file made and removed: what writing there needs, whoever runs it
            probe, probe_path = tempfile.mkstemp(prefix=".textclf-probe-", dir=folder)
        except OSError as err:
            raise UserError(f"{flag} {path}: cannot write in {folder} "
                            f"({err.strerror or err})") from None
        os.close(probe)
        os.unlink(probe_path)


def check_output_dir(flag: str, folder: str | Path, marker: str,
                     inputs: Sequence[tuple[str, str | Path]] = ()) -> None:
    """Refuse a folder that `atomic_dir` would replace whole when it holds one of
    `inputs`, or holds files but not `marker` (a file every earlier output of the command
    has): a folder of the user's own that a mistyped flag would wipe."""
    folder = Path(folder)
    for input_flag, source in inputs:
        source = Path(source)
        if same_file(folder, source) or folder.resolve() in source.resolve().parents:
            raise UserError(f"{flag} {folder}: holds the {input_flag} {source}, and is "
                            f"replaced whole; expected a folder of its own")
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{flag} {folder}: is a file; expected a folder to write")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / marker).exists():
        raise UserError(f"{flag} {folder}: holds files but no {marker}, so it is not an "
                        f"earlier output of this command, and it would be replaced whole; "
                        f"expected a new or empty folder, or an earlier output")


def same_file(a: Path, b: Path) -> bool:
    """Whether `a` and `b` are one file (a link or another spelling of the path included)."""
    try:
        return os.path.samefile(a, b)
    except OSError:                 # one of them does not exist (yet)
        return a.resolve() == b.resolve()


def existing_ancestor(folder: Path) -> Path:
    """`folder`, or the nearest of its parents that exists."""
    folder = folder.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def scratch_prefix(target: Path) -> str:
    """Scratch names: `.NAME.tmp-XXXX` beside the target (ignored by git via .gitignore)."""
    return f".{target.name}.tmp-"


def remove_stale_scratch(target: Path) -> None:
    """Scratch left beside `target` by a killed process. DVC runs one stage per workspace
    at a time (it holds a lock), so any scratch of this target is a leftover."""
    for stale in target.parent.glob(scratch_prefix(target) + "*"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a scratch folder beside `target`; on success it replaces `target`.

    On an exception the scratch folder is removed and `target` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_scratch(target)
    scratch = Path(tempfile.mkdtemp(prefix=scratch_prefix(target), dir=target.parent))
    # mkdtemp makes 0700 folders; outputs get the modes the user's umask gives, like
    # any other tool's (teammates on a shared machine may need to read them).
    scratch.chmod(0o777 & ~_umask())
    try:
        yield scratch
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    if target.exists():
        old = target.with_name(f"{scratch_prefix(target)}old")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        scratch.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        scratch.rename(target)


@contextlib.contextmanager
def atomic_file(target: str | Path) -> Iterator[Path]:
    """Yield a scratch path beside `target`; on success it is renamed onto `target`."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_scratch(target)
        fd, name = tempfile.mkstemp(prefix=scratch_prefix(target), dir=target.parent)
    except OSError as err:
        raise UserError(f"{target}: cannot write there ({err.strerror or err})") from None
    os.close(fd)
    scratch = Path(name)
    scratch.chmod(0o666 & ~_umask())  # mkstemp makes 0600 files
    try:
        yield scratch
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise
    # On disk before the rename: after a power cut `target` is the old file or the new
    # one, never a renamed file whose data had not been written yet.
    with open(scratch, "rb") as written:
        os.fsync(written.fileno())
    os.replace(scratch, target)


def write_json(path: str | Path, payload: Any) -> None:
    with atomic_file(path) as scratch:
        scratch.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n",
                           encoding="utf-8")


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold a lock file beside `path` (`NAME.lock`) where the platform has flock (not on
    Windows, where this does not lock): parallel runs that build the same cache file wait
    for each other, so one builds it and the others reuse it."""
    try:
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_name(path.name + ".lock"), "a")
    except (ImportError, OSError):
        yield
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
