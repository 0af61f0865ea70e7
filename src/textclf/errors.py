"""Errors meant for people, and the one place that turns them into an exit code."""

from __future__ import annotations

import functools
import os
import signal
import sys


class UserError(Exception):
    """A problem with the user's input (params, data, model path): print it, exit 2."""


def recovery_hint() -> str:
    """What to run after a failed stage. DVC deletes a stage's outputs before running it
    and names the running stage in $DVC_STAGE; dvc.lock still records the last good ones."""
    stage = os.environ.get("DVC_STAGE")
    if not stage:
        return ""
    return (f"\nhint: DVC removed the outputs of stage '{stage}' before running it; "
            f"`dvc checkout {stage}` restores the ones dvc.lock records (fix the cause, "
            f"then `dvc repro` runs it again)")


class Stopped(KeyboardInterrupt):
    """SIGTERM (what Kubernetes, systemd and `kill` send) raised like Ctrl-C, so that what
    a command was writing is cleaned up on the way out (textclf.outputs) rather than left
    where the process died."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop(signum, frame):
    raise Stopped(signum)


def exits_on_user_error(main):
    """Wrap a command's entry point: a UserError prints one clear line and exits with 2;
    Ctrl-C or SIGTERM prints one line and exits with 128 + the signal's number (130, 143),
    after the scratch of any output being written is removed. Commands that handle
    signals themselves (train, serve, tune) install their own handlers over these."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        previous = signal.signal(signal.SIGTERM, _stop)
        try:
            return main(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}{recovery_hint()}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt as err:
            signum = err.signum if isinstance(err, Stopped) else signal.SIGINT
            print(f"stopped by {signal.Signals(signum).name}: outputs are written whole or "
                  f"not at all, so an output this run had not finished is as it was before"
                  f"{recovery_hint()}", file=sys.stderr)
            raise SystemExit(128 + signum) from None
        finally:
            signal.signal(signal.SIGTERM, previous)

    return wrapper
