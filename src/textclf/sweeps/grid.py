"""The grid of a sweep, read exactly as `dvc exp run -S` reads it.

DVC hands each `-S` to Hydra's override parser (one key per `-S`, `a,b` or `range()` /
`choice()` sweeps it, brackets make a list, quotes keep commas) and runs the product of
all keys. We use the same public parser, so `textclf kfp` and `dvc exp run --queue` agree
on every grid, and each point's overrides are strings that DVC parses back to the same values.
"""

from __future__ import annotations

import itertools
import math
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from textclf.errors import UserError

DEFAULT_PARAMS_FILE = "params.yaml"
# More points than this is most likely a typo (84 MB of YAML for a million); --max-points.
DEFAULT_MAX_POINTS = 1000
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


def _parse(override: str):
    """(params file or None, Hydra's parsed override) of one `-S`; UserError if it does not
    parse or has no key."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    path, text = split_file(override)
    try:
        [parsed] = OverridesParser.create().parse_overrides([text])
    except HydraException as err:   # OverrideParseException is one
        message = str(err).strip().splitlines()[0]
        raise UserError(f"-S {override!r}: not `key=value` or `key=a,b` in the syntax of "
                        f"`dvc exp run -S`: {message}") from None
    if not parsed.key_or_group.strip():
        raise UserError(f"-S {override!r}: no key before '='; expected KEY=VALUES, "
                        "e.g. train.batch_size=16,32")
    return path, parsed


def sweep_values(override: str, limit: int | None = None) -> list[str]:
    """'train.batch_size=16,32' -> ['train.batch_size=16', 'train.batch_size=32'] (with file);
    at most `limit` + 1 of them, so a huge range is counted without being written out."""
    path, parsed = _parse(override)
    prefix = f"{path}:" if path else ""
    key = parsed.get_key_element()
    if parsed.value_type is None:           # `~key`: delete it, whatever its value
        return [f"{prefix}{key}"]
    if not parsed.is_sweep_override():
        values = [parsed.get_value_element_as_str()]
        empty = parsed.value() == ""
    else:
        if not parsed.is_discrete_sweep():
            raise UserError(f"-S {override!r}: only lists of values, range() and choice() "
                            f"can be swept, found {parsed.value_type.name.lower()}")
        if getattr(parsed.value(), "shuffle", False):
            raise UserError(f"-S {override!r}: shuffle() would number the points "
                            "differently on each compile; list the values in order")
        from hydra.errors import HydraException

        try:
            values = list(itertools.islice(parsed.sweep_string_iterator(),
                                           None if limit is None else limit + 1))
        except (HydraException, ValueError) as err:   # e.g. range(0,1,0)
            raise UserError(f"-S {override!r}: {str(err).strip().splitlines()[0]}") from None
        empty = any(value in ("", "''", '""') for value in values)
    if empty:   # usually a shell variable that was not set: `-S train.lr=$LR`
        raise UserError(f"-S {override!r}: {parsed.key_or_group} has an empty value; "
                        "give it one (null for none)")
    return [f"{prefix}{key}={value}" for value in values]


def check_sweep_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise UserError(f"--name {name!r}: expected letters, digits, '.', '-' or '_' "
                        "(it becomes part of a git ref), starting with a letter or digit")
    return name


def _size_error(sizes: list[int], max_points: int) -> UserError:
    shown = [f"more than {max_points:,}" if n > max_points else f"{n:,}" for n in sizes]
    total = math.prod(sizes)
    count = f"more than {max_points:,}" if any(n > max_points for n in sizes) else f"{total:,}"
    return UserError(f"-S: the grid has {count} points ({' x '.join(shown)} values), more "
                     f"than --max-points {max_points:,}; sweep fewer values, or raise "
                     f"--max-points if you mean to run them all")


def grid_points(overrides: list[str],
                max_points: int = DEFAULT_MAX_POINTS) -> list[GridPoint]:
    """Every combination of the swept values, numbered from 1 like `dvc exp run -n NAME`.

    The order is the product in the order of the `-S` flags, the first key changing slowest,
    as `dvc exp run --queue` orders it. The points are counted before any is built: a grid
    of more than `max_points` is refused (UserError) in the time it takes to count.
    """
    keys = [f"{path or DEFAULT_PARAMS_FILE}:{text.partition('=')[0].lstrip('+~')}"
            for path, text in map(split_file, overrides)]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise UserError(f"-S: each key may be swept once, found {', '.join(repeated)} twice "
                        "(give all its values in one -S, separated by commas)")
    axes = [sweep_values(override, limit=max_points) for override in overrides]
    for override, axis in zip(overrides, axes):
        if not axis:
            raise UserError(f"-S {override!r}: sweeps no value (an empty range?)")
    if math.prod(len(axis) for axis in axes) > max_points:
        raise _size_error([len(axis) for axis in axes], max_points)
    return [GridPoint(i, tuple(combo))
            for i, combo in enumerate(itertools.product(*axes), start=1)]


_MISSING = object()


def committed_text(repo: Path, rev: str, path: str) -> str | None:
    """The file `path` as commit `rev` has it (`git show REV:./PATH` in `repo`); None where
    this clone does not know the commit or the commit has no such file."""
    shown = subprocess.run(["git", "show", f"{rev}:./{path}"], cwd=repo,
                           capture_output=True, text=True)
    return shown.stdout if shown.returncode == 0 else None


def _lookup(data: Any, key: str) -> Any:
    """The value at a dotted key, or _MISSING."""
    node = data
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isascii() and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _has_key(data: Any, key: str) -> bool:
    return _lookup(data, key) is not _MISSING


def overrides_hold(overrides: list[str], read_params: Callable[[str], Any]) -> bool:
    """Whether params files, as `read_params(path)` gives them, hold what each one-value
    `-S` override sets (Hydra's typed value; a deleted key absent): an experiment that
    ran with these overrides. False where a file cannot be read (None)."""
    for override in overrides:
        path, parsed = _parse(override)
        data = read_params(path or DEFAULT_PARAMS_FILE)
        if data is None:
            return False
        found = _lookup(data, parsed.key_or_group)
        if parsed.is_delete():
            holds = found is _MISSING
        else:
            holds = found is not _MISSING and found == parsed.value()
        if not holds:
            return False
    return True


def _known_keys(data: Any, key: str) -> str:
    """The keys beside where `key` was looked for: 'known keys in train: lr, epochs, ...'."""
    parent, _, _ = key.rpartition(".")
    node = data
    for part in parent.split(".") if parent else []:
        if not isinstance(node, dict) or part not in node:
            return ""
        node = node[part]
    if not isinstance(node, dict):
        return ""
    return f" (known keys in {parent or 'the file'}: {', '.join(map(str, node))})"


def check_keys(overrides: list[str], read_params: Callable[[str], Any]) -> None:
    """Refuse (UserError) a `-S` key that DVC would refuse when the point runs: a key that is
    not in its params file (Hydra needs `+key` to add one), or `+key` for one already there.
    `read_params(path)` is the file's content in the swept revision (None: not checked)."""
    for override in overrides:
        path, parsed = _parse(override)
        path, key = path or DEFAULT_PARAMS_FILE, parsed.key_or_group
        if parsed.is_force_add():
            continue
        data = read_params(path)
        if data is None:
            continue
        present = _has_key(data, key)
        if parsed.is_add() and present:
            raise UserError(f"-S {override!r}: {key} is already in {path}; drop the '+' "
                            "to change it")
        if not parsed.is_add() and not present:
            raise UserError(f"-S {override!r}: {key} is not in {path}"
                            f"{_known_keys(data, key)}")
