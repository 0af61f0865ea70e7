"""A point's step under a guard: `python -I step_guard.py POINT_PID GRACE CMD...`.

Each step of a sweep point (`git clone`, `dvc exp run` and the stage it runs) runs in a
session of its own, so that a stopped point can stop the step's whole process group
(stop.py). A point killed outright (SIGKILL, the out-of-memory killer) cannot, and a kill
of the sweep's process group does not reach the step's. This guard leads the step's
group: it runs CMD as its child and, when the point dies (Linux's PR_SET_PDEATHSIG), stops
the group as the point would have: SIGTERM, then SIGKILL after GRACE seconds.

Run by path with `-I` and the standard library only: it must work whatever revision's
`textclf` the step's PYTHONPATH names.
"""

import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1


def stop_group(child: subprocess.Popen, grace: float) -> None:
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    os.killpg(0, signal.SIGTERM)          # reaches this process too: its handler ignores it
    deadline = time.monotonic() + grace
    while child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(0, signal.SIGKILL)          # what is left of the group, this guard included


def main() -> None:
    point, grace, cmd = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
    for sig in (signal.SIGINT, signal.SIGTERM):
        # the point signals the whole group; the step decides, the guard waits for it
        signal.signal(sig, lambda *_: None)
    try:
        child = subprocess.Popen(cmd)
    except OSError as err:
        print(f"error: {cmd[0]}: {err.strerror}", file=sys.stderr)
        sys.exit(127)
    signal.signal(signal.SIGUSR1, lambda *_: stop_group(child, grace))
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGUSR1, 0, 0, 0)
    if os.getppid() != point:             # the point died before the guard was set
        stop_group(child, grace)
    # Not child.wait(): the handler's child.poll() would find its lock held and see nothing.
    while child.poll() is None:
        time.sleep(0.05)
    code = child.returncode
    sys.exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
