"""The temporary folder kfp.local's tasks work in under `textclf kfp run --local`.

The tasks get it as TMPDIR: kfp.local's own workspace folder, the `mktemp -d` folder each
task's shell writes the component's code to (KFP's lightweight components do; a cluster's
container is thrown away, a local run's /tmp is not) and each point's clone go there. It is
removed when the run ends, by Ctrl-C or SIGTERM too; a run killed outright (SIGKILL, the
out-of-memory killer) cannot, so the next run removes it: each folder holds a lock
(`flock`) for as long as its run lives, and one whose lock file is gone was being removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

PREFIX = "textclf-kfp-tmp-"
LOCK = ".in-use"


def remove_stale(parent: Path) -> list[Path]:
    """Remove the scratch folders under `parent` whose run has ended (their lock is free);
    the folders removed."""
    removed = []
    for folder in parent.glob(PREFIX + "*"):
        if not (folder / LOCK).exists():
            # Its lock was made before it took this name, so its removal began: a task
            # still writing as its run ended (SIGTERM) kept the rest of it there.
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
            continue
        try:
            with open(folder / LOCK, "rb") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        except OSError:     # held by a running sweep, or no lock: not ours to judge
            continue
    return removed


@contextlib.contextmanager
def scratch_for_tasks() -> Iterator[Path]:
    """A new scratch folder, locked, as TMPDIR within; removed afterwards, with what the
    tasks left in it. Scratch that killed runs left in the same place goes first."""
    parent = Path(tempfile.gettempdir())
    remove_stale(parent)
    before = os.environ.get("TMPDIR")
    # Locked before it takes its name, so that no other run's remove_stale sees it unlocked.
    fresh = Path(tempfile.mkdtemp(prefix=".textclf-kfp-new-", dir=parent))
    with open(fresh / LOCK, "wb") as lock:     # not inherited by the tasks (PEP 446)
        fcntl.flock(lock, fcntl.LOCK_EX)
        scratch = fresh.rename(parent / (PREFIX + fresh.name.rsplit("-", 1)[1]))
        os.environ["TMPDIR"] = str(scratch)
        try:
            yield scratch
        finally:
            if before is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = before
            _remove(scratch)


def _remove(folder: Path, tries: int = 5) -> None:
    """rmtree, again while a task being stopped still writes into the folder (what is
    left after the last try goes with the next run's remove_stale)."""
    for _ in range(tries):
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            return
        time.sleep(0.2)
