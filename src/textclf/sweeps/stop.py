"""Stopping a sweep on SIGINT (Ctrl-C) or SIGTERM without leaving a process behind.

Under `textclf kfp run --local`, kfp.local runs each point as a child process (the KFP
executor) from a thread pool, and the point runs its steps (`dvc exp run`, which runs
`textclf train`) as children of that. A signal used to kill the command alone and leave
the rest running. Now:

* each step runs in its own session, so it is one process group; a point that gets
  SIGINT or SIGTERM stops its step's whole group (SIGTERM, then SIGKILL after STEP_GRACE_S:
  `textclf train` saves a checkpoint first) and exits without a result (PointStopped);
  a point killed outright cannot, so the step's group is led by step_guard.py, which does
  the same when the point dies;
* the command, on the first SIGINT or SIGTERM (`stopped_cleanly`), marks the sweep stopped in a
  file every point can see (STOP_FILE_VARIABLE), so a point kfp.local starts afterwards does
  nothing; sends SIGTERM to the running points; waits for every process it found under it
  and their groups, kills what is left after the grace period; names the experiments that
  did not finish; and exits with 128 + the signal's number (130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import psutil  # a dependency of DVC

from textclf.sweeps.results import PointResult

# Path of a file that exists once the sweep is stopped; set by the command for every point.
STOP_FILE_VARIABLE = "TEXTCLF_SWEEP_STOP_FILE"
# How long a stopped step may take: `textclf train` saves a checkpoint on SIGTERM.
STEP_GRACE_S = 20.0
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class PointStopped(BaseException):
    """The point got SIGINT or SIGTERM, or the sweep was stopped: no result, no push.
    A BaseException, so that no `except Exception` in a step turns it into a result."""


def stop_requested() -> bool:
    path = os.environ.get(STOP_FILE_VARIABLE)
    return bool(path) and Path(path).exists()


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def stopped_by_signals():
    """Within it, SIGINT and SIGTERM raise PointStopped (in the main thread; elsewhere,
    where Python cannot install handlers, nothing changes)."""
    if not _in_main_thread():
        yield
        return

    def stop(signum, frame):
        for sig in SIGNALS:   # the first signal stops the point; a second must not cut that short
            signal.signal(sig, signal.SIG_IGN)
        raise PointStopped(f"stopped by {signal.Signals(signum).name}")

    with _handling(stop):
        yield


@contextlib.contextmanager
def _handling(handler) -> Iterator[None]:
    """`handler` for SIGNALS within; the handlers before it restored after."""
    previous = {sig: signal.signal(sig, handler) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs. Not `killpg(pgid, 0)`: that counts
    zombies, and an orphan's zombie stays forever where PID 1 does not reap (containers)."""
    for proc in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):   # gone, or a zombie (no group)
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
    return False


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_group(process: subprocess.Popen, grace: float = STEP_GRACE_S) -> None:
    """SIGTERM to the process group `process` leads, SIGKILL once `grace` seconds have
    passed; returns when the group is empty (or 5 s after the SIGKILL). In the main
    thread SIGINT and SIGTERM are ignored meanwhile (a second Ctrl-C must not cut the
    clean-up short) and their handlers restored after: the caller decides what comes next."""
    with _handling(signal.SIG_IGN) if _in_main_thread() else contextlib.nullcontext():
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            _signal_group(process.pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                process.poll()   # reap the leader: as a zombie it would keep the group alive
                if not _group_alive(process.pid):
                    return
                time.sleep(0.1)


def run_in_own_group(cmd: list[str], cwd: Path, env: dict[str, str]
                     ) -> subprocess.CompletedProcess:
    """`subprocess.run(cmd, capture_output=True, text=True)` in a new session; if anything
    interrupts the wait (PointStopped, KeyboardInterrupt), the whole group is stopped."""
    if stop_requested():
        raise PointStopped("the sweep was stopped")
    # led by step_guard.py, which stops the group if this process dies without doing so
    guarded = [sys.executable, "-I", str(Path(__file__).with_name("step_guard.py")),
               str(os.getpid()), str(STEP_GRACE_S), *cmd]
    with subprocess.Popen(guarded, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as process:
        try:
            stdout, stderr = process.communicate()
        except BaseException:
            stop_group(process)
            raise
    return subprocess.CompletedProcess(cmd, process.returncode, stdout, stderr)


def _tree(processes: dict, groups: set[int]) -> None:
    """Add every live descendant of `processes` to it, and each one's process group."""
    for proc in list(processes.values()):
        with contextlib.suppress(psutil.Error):
            for child in proc.children(recursive=True):
                processes.setdefault(child.pid, child)
    for pid in list(processes):
        with contextlib.suppress(OSError):
            groups.add(os.getpgid(pid))
    groups.discard(os.getpgrp())   # ours: the shell's job, this command included


def _alive(processes: dict) -> list:
    alive = []
    for proc in processes.values():
        with contextlib.suppress(psutil.Error):
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
    return alive


def stop_children(grace: float = STEP_GRACE_S) -> None:
    """Stop every process under this one: SIGTERM to those in this process group (kfp.local's
    shells and the points, as Ctrl-C in a terminal would; each point stops its step's own
    group), then wait for all of them, their descendants and those descendants' process
    groups; SIGKILL whatever is left after `grace` (plus a margin)."""
    me = psutil.Process()
    processes = {child.pid: child for child in me.children()}
    groups: set[int] = set()
    _tree(processes, groups)
    for proc in _alive(processes):
        with contextlib.suppress(OSError, psutil.Error):
            if os.getpgid(proc.pid) == os.getpgrp():
                proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace + 5
    while time.monotonic() < deadline:
        _tree(processes, groups)
        if not _alive(processes) and not any(map(_group_alive, groups)):
            break
        time.sleep(0.2)
    for pgid in groups:
        _signal_group(pgid, signal.SIGKILL)
    for proc in [*_alive(processes), *me.children()]:   # children kfp.local started since
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(_alive(processes), timeout=5)


def _names(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def stopped_message(signum: int, unfinished: list[str], finished: list[str], root: str) -> str:
    done = f"; finished: {_names(finished)}" if finished else ""
    return (f"stopped by {signal.Signals(signum).name}: the running points were stopped and "
            f"the rest not started; experiments that did not finish (not pushed): "
            f"{_names(unfinished) or 'none'}{done} (task outputs in {root})")


def exit_stopped(signum: int, message: str):
    """Print `message` and end the process now, with 128 + signum.

    os._exit, not SystemExit: kfp.local waits in a `finally` for every queued point
    (ThreadPoolExecutor.shutdown(wait=True)), so unwinding would start them all."""
    sys.stdout.flush()
    print(f"error: {message}", file=sys.stderr, flush=True)
    os._exit(128 + signum)


def finished_points(root: Path, since: float) -> set[str]:
    """Names of the points whose result kfp.local wrote under `root` since `since`."""
    names = set()
    for path in root.rglob("executor_output.json"):
        try:
            if path.stat().st_mtime >= since:
                output = json.loads(path.read_text(encoding="utf-8"))
                names.add(PointResult.from_json(output["parameterValues"]["Output"]).name)
        except (OSError, ValueError, KeyError, TypeError):   # the leaderboard's, a torn file
            continue
    return names


@contextlib.contextmanager
def stopped_cleanly(names: list[str], root: Path, cleanup: Callable[[], None] = lambda: None):
    """Within it (around kfp.local's run of the sweep), the first SIGINT or SIGTERM stops
    every point and process of the sweep, calls `cleanup` (no `finally` runs after it),
    says which experiments did not finish and exits with 128 + the signal."""
    started = time.time() - 1   # file times may be rounded down
    stop_file = root / f".stopped-{os.getpid()}-{time.time_ns()}"   # the points inherit it

    def stop(signum, frame):
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        stop_file.parent.mkdir(parents=True, exist_ok=True)
        stop_file.touch()
        print(f"\n{signal.Signals(signum).name}: stopping the sweep's running points...",
              file=sys.stderr, flush=True)
        stop_children()
        cleanup()
        done = finished_points(root, started)
        exit_stopped(signum, stopped_message(signum, [n for n in names if n not in done],
                                             [n for n in names if n in done], str(root)))

    os.environ[STOP_FILE_VARIABLE] = str(stop_file)
    try:
        with _handling(stop):
            yield
    finally:
        os.environ.pop(STOP_FILE_VARIABLE, None)
