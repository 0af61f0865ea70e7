"""A study's settings and search space, as `textclf tune --space tune.yaml` reads them:

    metric: val_f1_macro        # reported each epoch; the trial's value is its kept epoch's
    direction: maximize
    trials: 20                  # the study's size, counted over every run of it
    timeout: null               # seconds one `textclf tune` may start trials for
    sampler: {name: tpe, seed: 0, n_startup_trials: 5}
    pruner: {name: median, n_startup_trials: 3, n_warmup_steps: 1}
    params:
      train.lr: {log_uniform: [1.0e-5, 3.0e-4]}
      train.batch_size: {choice: [16, 32]}
      data.class_ratio: {choice: [null, [2, 1, 1, 1, 1]]}
      train.epochs: {int: [2, 6]}

Every value a trial could get is checked by params.yaml's own checks (textclf.params) before
any trial runs, so a bad key or value stops the study with a message naming it. The file is
read as DVC reads params.yaml (YAML 1.2: `1e-5` is a number).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml import YAMLError

from textclf.errors import UserError
from textclf.params import Params, ParamsError, params_from_dict, yaml_problem
from textclf.training.trial import EPOCH_METRICS, construct, import_optuna, make_pruner

KINDS = ("choice", "uniform", "log_uniform", "int")
SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler", "grid": "GridSampler"}
TOP_KEYS = ("metric", "direction", "trials", "timeout", "sampler", "pruner", "params")


class SpaceError(UserError):
    """The search-space file has an unknown key or a value no trial could run with."""


@dataclass(frozen=True)
class Dimension:
    """One params.yaml key and the values a trial may give it."""
    key: str                  # "train.lr"
    kind: str                 # one of KINDS
    values: tuple             # the choices, or (low, high)

    @property
    def as_text(self) -> bool:
        """Optuna keeps only None, bools, numbers and strings as choices: a choice set with
        a list in it (a class_ratio) is kept as JSON text."""
        return self.kind == "choice" and any(isinstance(v, (list, dict)) for v in self.values)

    @property
    def grid_values(self) -> list:
        """Every value, as Optuna keeps them (choices and integer ranges only)."""
        if self.kind == "choice":
            return [json.dumps(v) for v in self.values] if self.as_text else list(self.values)
        if self.kind == "int":
            return list(range(self.values[0], self.values[1] + 1))
        raise SpaceError(f"params.{self.key}: {self.kind} has no finite set of values")

    def distribution(self):
        distributions = import_optuna().distributions
        low, high = (self.values + (None, None))[:2]
        if self.kind == "choice":
            return distributions.CategoricalDistribution(self.grid_values)
        if self.kind == "int":
            return distributions.IntDistribution(low, high)
        return distributions.FloatDistribution(low, high, log=self.kind == "log_uniform")

    def value(self, suggested: Any) -> Any:
        """The params.yaml value of what Optuna suggested. A continuous draw is kept to 10
        significant digits: DVC writes some 17-digit floats into dvc.lock one unit in the
        last place off the params.yaml it wrote, and the experiment then reads as stale
        (`dvc status` after `dvc exp apply`) though nothing changed."""
        if self.kind in ("uniform", "log_uniform"):
            return float(f"{suggested:.10g}")
        return json.loads(suggested) if self.as_text else suggested

    def candidates(self) -> list:
        """The values params.yaml's checks see: every choice, or both ends of a range."""
        return list(self.values)


@dataclass(frozen=True)
class TuneConfig:
    metric: str
    direction: str
    trials: int | None
    timeout: float | None
    sampler: dict[str, Any]           # {"name": "tpe", "seed": 0, ...}
    pruner: dict[str, Any]            # {"name": "median", ...}
    space: tuple[Dimension, ...]

    def suggest(self, trial) -> dict[str, Any]:
        """A trial's params.yaml values: {"train.lr": 0.0001, "data.class_ratio": [2, 1]}."""
        return {d.key: d.value(trial.params[d.key]) for d in self.space}

    def distributions(self) -> dict:
        return {d.key: d.distribution() for d in self.space}

    @property
    def grid_size(self) -> int | None:
        """Points of the full grid of this space, or None if a dimension is continuous."""
        if any(d.kind in ("uniform", "log_uniform") for d in self.space):
            return None
        return math.prod(len(d.grid_values) for d in self.space)

    def make_sampler(self, seed_offset: int = 0):
        """The sampler; `seed_offset` (the trials so far) keeps a resumed study from drawing
        the first run's random points again."""
        samplers = import_optuna().samplers
        settings = {k: v for k, v in self.sampler.items() if k != "name"}
        if settings.get("seed") is not None:
            settings["seed"] += seed_offset
        if self.sampler["name"] == "grid":
            settings["search_space"] = {d.key: d.grid_values for d in self.space}
        return construct(getattr(samplers, SAMPLERS[self.sampler["name"]]), settings, "sampler")


def overrides(values: dict[str, Any]) -> list[str]:
    """`dvc exp run -S` arguments: JSON is YAML flow and Hydra's override grammar alike."""
    return [f"{key}={json.dumps(value)}" for key, value in values.items()]


def read_config(path: str | Path, params_path: str | Path = "params.yaml") -> TuneConfig:
    """Read and check a search-space file against the params file trials start from."""
    path = Path(path)
    try:
        raw = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpaceError(f"{path}: file not found") from None
    except YAMLError as err:
        raise SpaceError(f"{path}{yaml_problem(err)}") from None
    try:
        return _config(raw, _params_tree(params_path))
    except UserError as err:
        raise SpaceError(f"{path}: {err}") from None


def _params_tree(params_path: str | Path) -> dict:
    from textclf.params import load_params

    load_params(params_path)                     # the starting point itself must be valid
    return YAML(typ="safe").load(Path(params_path).read_text(encoding="utf-8"))


def _config(raw: Any, params: dict) -> TuneConfig:
    if not isinstance(raw, dict):
        raise SpaceError(f"the top level must be a mapping of {', '.join(TOP_KEYS)}")
    unknown = sorted(set(raw) - set(TOP_KEYS))
    if unknown:
        raise SpaceError(f"unknown key {unknown[0]} (known keys: {', '.join(TOP_KEYS)})")
    metric = raw.get("metric", "val_f1_macro")
    if metric not in EPOCH_METRICS:
        raise SpaceError(f"metric must be one of {list(EPOCH_METRICS)} (validation scores "
                         f"every epoch has), found {metric!r}")
    natural = "minimize" if metric.endswith("loss") else "maximize"
    direction = raw.get("direction", natural)
    if direction != natural:
        raise SpaceError(f"direction must be {natural} for {metric}, found {direction!r}")
    config = TuneConfig(metric=metric, direction=direction,
                        trials=_count(raw.get("trials"), "trials", int),
                        timeout=_count(raw.get("timeout"), "timeout", (int, float)),
                        sampler=_named(raw.get("sampler", "tpe"), "sampler", SAMPLERS),
                        pruner=_named(raw.get("pruner", "median"), "pruner", None),
                        space=_space(raw.get("params"), params))
    make_pruner(config.pruner)                   # refuses an unknown setting, naming it
    config.make_sampler()
    return config


def _count(value: Any, key: str, kind) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, kind) or not 0 < value < math.inf:
        raise SpaceError(f"{key} must be null or a positive number, found {value!r}")
    return value


def _named(value: Any, key: str, names: dict | None) -> dict[str, Any]:
    settings = {"name": value} if isinstance(value, str) else value
    if not isinstance(settings, dict) or "name" not in settings:
        raise SpaceError(f"{key} must be a name or a mapping with a name, found {value!r}")
    if names is not None and settings["name"] not in names:
        raise SpaceError(f"{key}.name must be one of {list(names)}, found {settings['name']!r}")
    return dict(settings)


def _space(raw: Any, params: dict) -> tuple[Dimension, ...]:
    if not isinstance(raw, dict) or not raw:
        raise SpaceError("params must map params.yaml keys to what a trial may give them, "
                         "e.g. train.lr: {log_uniform: [1.0e-5, 1.0e-3]}")
    dimensions = tuple(_dimension(str(key), spec) for key, spec in raw.items())
    for dimension in dimensions:
        _check_key(dimension.key)
        for value in dimension.candidates():
            _check_value(params, dimension.key, value)
    return dimensions


def _dimension(key: str, spec: Any) -> Dimension:
    where = f"params.{key}"
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
        raise SpaceError(f"{where} must be one of {{choice: [...]}}, {{uniform: [low, high]}}, "
                         f"{{log_uniform: [low, high]}}, {{int: [low, high]}}; found {spec!r}")
    [(kind, values)] = spec.items()
    if not isinstance(values, list) or not values:
        raise SpaceError(f"{where}.{kind} must be a non-empty list, found {values!r}")
    if kind == "choice":
        texts = [json.dumps(v, sort_keys=True) for v in values]
        if len(set(texts)) < len(texts):
            raise SpaceError(f"{where}.choice lists a value twice: {values!r}")
        return Dimension(key, kind, tuple(values))
    number = int if kind == "int" else (int, float)
    if len(values) != 2 or any(isinstance(v, bool) or not isinstance(v, number)
                               or not math.isfinite(v) for v in values):
        expected = "integers" if kind == "int" else "finite numbers"
        raise SpaceError(f"{where}.{kind} must be [low, high], two {expected}, found {values!r}")
    low, high = values
    if not low < high or (kind == "log_uniform" and low <= 0):
        raise SpaceError(f"{where}.{kind} must have low < high"
                         f"{' and low > 0' if kind == 'log_uniform' else ''}, found {values!r}")
    return Dimension(key, kind, (float(low), float(high)) if kind != "int" else (low, high))


def _check_key(key: str) -> None:
    sections = typing.get_type_hints(Params)
    section, _, name = key.partition(".")
    if section not in sections:
        raise SpaceError(f"params.{key}: not a params.yaml key (sections: {', '.join(sections)})")
    names = [field.name for field in dataclasses.fields(sections[section])]
    if name not in names:
        raise SpaceError(f"params.{key}: not a params.yaml key (keys of {section}: "
                         f"{', '.join(names)})")


def _check_value(params: dict, key: str, value: Any) -> None:
    section, name = key.split(".", 1)
    trial = copy.deepcopy(params)
    trial.setdefault(section, {})[name] = value
    try:
        params_from_dict(trial, source="params.yaml")
    except ParamsError as err:
        raise SpaceError(f"params.{key}: {json.dumps(value)} is refused: {err}") from None
