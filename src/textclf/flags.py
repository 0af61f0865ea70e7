"""Numeric command-line flags checked as params.yaml's values are: a number, finite, in range.

argparse's `type=float` takes "nan", "inf" and "1e13" without a word; each of them has hung or
crashed a command (`serve --max-wait-ms nan` hung every request). Every numeric flag of every
command uses one of these types instead, so a bad value is refused before anything runs, as
argparse refuses any other bad flag: one usage line naming the flag, exit 2.

    parser.add_argument("--max-wait-ms", type=number(0, 60_000), default=5.0)
    parser.add_argument("--batch-size", type=integer(1), default=64)
"""

from __future__ import annotations

import argparse
import math
from typing import Callable, Optional


def _range_text(low, high) -> str:
    if high is None:
        return f"at least {low}"
    return f"between {low} and {high}"


def number(low: float, high: Optional[float] = None, *,
           above_low: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite float in [low, high] ((low, high] with `above_low`)."""

    def parse(value: str) -> float:
        expected = (f"a number above {low}" + (f" and at most {high}" if high is not None
                                                else "")) if above_low else \
            f"a number {_range_text(low, high)}"
        try:
            found = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, found {value!r}") from None
        if not math.isfinite(found) or found < low or (above_low and found == low) or (
                high is not None and found > high):
            raise argparse.ArgumentTypeError(f"expected {expected}, found {value!r}")
        return found

    parse.__name__ = "number"  # argparse names the type in some messages
    return parse


def integer(low: int, high: Optional[int] = None) -> Callable[[str], int]:
    """An argparse type: a whole number in [low, high] ("1e3", "2.5" and "nan" are refused)."""

    def parse(value: str) -> int:
        expected = f"a whole number {_range_text(low, high)}"
        try:
            found = int(value.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, found {value!r}") from None
        if found < low or (high is not None and found > high):
            raise argparse.ArgumentTypeError(f"expected {expected}, found {value!r}")
        return found

    parse.__name__ = "integer"
    return parse


positive_int = integer(1)
