"""Errors meant for people, and the one place that turns them into an exit code."""

from __future__ import annotations

import functools
import sys


class UserError(Exception):
    """A problem with the user's input (params, data, model path): print it, exit 2."""


def exits_on_user_error(main):
    """Wrap a stage entry point: a UserError prints one clear line and exits with 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper
