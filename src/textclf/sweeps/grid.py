"""The grid of a sweep, read exactly as `dvc exp run -S` reads it.

DVC hands each `-S` to Hydra's override parser (one key per `-S`, `a,b` or `range()` /
`choice()` sweeps it, brackets make a list, quotes keep commas) and runs the product of
all keys. We use the same public parser, so `textclf kfp` and `dvc exp run --queue` agree
on every grid, and each point's overrides are strings that DVC parses back to the same values.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from textclf.errors import UserError

DEFAULT_PARAMS_FILE = "params.yaml"
# Experiment names become git refs (refs/exps/.../<name>); DVC's own `-n` check is stricter
# than git's, so keep to letters, digits, dots, dashes and underscores.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,80}")


@dataclass(frozen=True)
class GridPoint:
    """One experiment of the sweep: its number and its `-S` overrides, one value per key."""
    number: int                    # 1, 2, ...: the experiment is named `<sweep name>-<number>`
    overrides: tuple[str, ...]     # e.g. ("train.batch_size=16", "data.class_ratio=[2,1,1,1,1]")

    def name(self, sweep_name: str) -> str:
        return f"{sweep_name}-{self.number}"

    def as_item(self) -> dict:
        """The JSON-able form a ParallelFor iteration receives (KFP makes numbers floats)."""
        return {"number": str(self.number), "overrides": list(self.overrides)}


def split_file(override: str) -> tuple[str | None, str]:
    """'other.yaml:train.lr=1' -> ('other.yaml', 'train.lr=1'), 'a=1' -> (None, 'a=1').

    DVC's rule for `-S`: a colon before the first '=' names the params file.
    """
    if ":" not in override.partition("=")[0]:
        return None, override
    path, _, rest = override.partition(":")
    return path, rest


def sweep_values(override: str) -> list[str]:
    """'train.batch_size=16,32' -> ['train.batch_size=16', 'train.batch_size=32'] (with file)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    path, text = split_file(override)
    prefix = f"{path}:" if path else ""
    try:
        [parsed] = OverridesParser.create().parse_overrides([text])
        key = parsed.get_key_element()
        if not parsed.is_sweep_override():
            return [f"{prefix}{key}={parsed.get_value_element_as_str()}"]
        if not parsed.is_discrete_sweep():
            raise UserError(f"-S {override!r}: only lists of values, range() and choice() "
                            f"can be swept, found {parsed.value_type.name.lower()}")
        return [f"{prefix}{key}={value}" for value in parsed.sweep_string_iterator()]
    except HydraException as err:   # OverrideParseException is one
        message = str(err).strip().splitlines()[0]
        raise UserError(f"-S {override!r}: not `key=value` or `key=a,b` in the syntax of "
                        f"`dvc exp run -S`: {message}") from None


def check_sweep_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise UserError(f"--name {name!r}: expected letters, digits, '.', '-' or '_' "
                        "(it becomes part of a git ref), starting with a letter or digit")
    return name


def grid_points(overrides: list[str]) -> list[GridPoint]:
    """Every combination of the swept values, numbered from 1 like `dvc exp run -n NAME`.

    The order is the product in the order of the `-S` flags, the first key changing slowest,
    as `dvc exp run --queue` orders it.
    """
    keys = [f"{path or DEFAULT_PARAMS_FILE}:{text.partition('=')[0].lstrip('+~')}"
            for path, text in map(split_file, overrides)]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise UserError(f"-S: each key may be swept once, found {', '.join(repeated)} twice "
                        "(give all its values in one -S, separated by commas)")
    axes = [sweep_values(override) for override in overrides]
    return [GridPoint(i, tuple(combo))
            for i, combo in enumerate(itertools.product(*axes), start=1)]
