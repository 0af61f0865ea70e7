"""Errors meant for people, and the one place that turns them into an exit code."""

from __future__ import annotations

import functools
import os
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


def exits_on_user_error(main):
    """Wrap a stage entry point: a UserError prints one clear line and exits with 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}{recovery_hint()}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper
