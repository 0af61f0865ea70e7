"""Typed, validated view of params.yaml.

Every stage reads params.yaml through `load_params`, so a typo or an impossible
value stops the stage with a message that names the key, before any work.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from textclf.errors import UserError

Label = Union[str, int]
Precision = Literal["auto", "fp32", "bf16", "fp16"]


class ParamsError(UserError):
    """params.yaml has an unknown key, a wrong type or an impossible value."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads `1e-4` as a number, as YAML 1.2 and DVC do.

    PyYAML follows YAML 1.1, where a float needs a dot (`1.0e-4`), so `lr: 1e-4`
    would otherwise arrive as the string '1e-4'.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


@dataclass(frozen=True)
class DataParams:
    path: str
    text_column: str = "text"
    label_column: str = "label"
    labels: Optional[list[Label]] = None
    val_size: float = 0.1
    test_size: float = 0.2
    class_ratio: Optional[list[float]] = None
    seed: int = 42

    def check(self, fail) -> None:
        for key in ("val_size", "test_size"):
            if not 0 < getattr(self, key) < 1:
                fail(key, "a fraction strictly between 0 and 1", getattr(self, key))
        if self.val_size + self.test_size >= 1:
            fail("test_size", f"val_size + test_size below 1 (val_size is {self.val_size})",
                 self.test_size)
        if self.labels is not None:
            names = [str(label) for label in self.labels]
            if len(set(names)) != len(names) or len(names) < 2:
                fail("labels", "null or a list of at least 2 distinct labels", self.labels)
        if self.class_ratio is not None:
            if any(not math.isfinite(r) or r <= 0 for r in self.class_ratio):
                fail("class_ratio", "null or a list of positive numbers", self.class_ratio)
            if self.labels is not None and len(self.class_ratio) != len(self.labels):
                fail("class_ratio", f"one number per label ({len(self.labels)} labels: "
                     f"{self.labels})", self.class_ratio)


@dataclass(frozen=True)
class ModelParams:
    name: str
    max_length: int = 128

    def check(self, fail) -> None:
        if not self.name.strip():
            fail("name", "a Hugging Face model id or a local directory", self.name)
        if not 8 <= self.max_length <= 8192:
            fail("max_length", "an integer between 8 and 8192", self.max_length)


@dataclass(frozen=True)
class TrainParams:
    batch_size: int = 32
    epochs: int = 3
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    precision: Precision = "auto"
    freeze_embeddings: bool = False
    seed: int = 42

    def check(self, fail) -> None:
        for key in ("batch_size", "epochs"):
            if getattr(self, key) < 1:
                fail(key, "a positive integer", getattr(self, key))
        if not 0 < self.lr < 1:
            fail("lr", "a learning rate between 0 and 1", self.lr)
        if self.weight_decay < 0:
            fail("weight_decay", "a number >= 0", self.weight_decay)
        if not 0 <= self.warmup_ratio < 1:
            fail("warmup_ratio", "a fraction in [0, 1)", self.warmup_ratio)
        if self.max_grad_norm <= 0:
            fail("max_grad_norm", "a positive number", self.max_grad_norm)


@dataclass(frozen=True)
class EvaluateParams:
    batch_size: int = 64
    precision: Precision = "auto"

    def check(self, fail) -> None:
        if self.batch_size < 1:
            fail("batch_size", "a positive integer", self.batch_size)


@dataclass(frozen=True)
class Params:
    data: DataParams
    model: ModelParams
    train: TrainParams
    evaluate: EvaluateParams


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file; raise ParamsError naming the bad key."""
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    return params_from_dict(raw, source=str(path))


def params_from_dict(raw: Any, source: str = "params") -> Params:
    return _build(Params, raw, source, prefix="")


def _build(cls, raw: Any, source: str, prefix: str):
    where = prefix.rstrip(".") or "top level"
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: {where} must be a mapping, found {_show(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ParamsError(f"{source}: unknown key {prefix}{unknown[0]} "
                          f"(known keys in {where}: {', '.join(fields)})")
    values = {}
    for name, field in fields.items():
        key = prefix + name
        if name not in raw:
            if field.default is dataclasses.MISSING:
                raise ParamsError(f"{source}: missing key {key}")
            continue
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, raw[name], source, prefix=key + ".")
        else:
            values[name] = _coerce(raw[name], hint, source, key)
    obj = cls(**values)
    if hasattr(obj, "check"):
        def fail(name, expected, found):
            raise ParamsError(f"{source}: {prefix}{name} must be {expected}, found {_show(found)}")
        obj.check(fail)
    return obj


def _coerce(value: Any, hint: Any, source: str, key: str) -> Any:
    """Check `value` against a type hint; ints are accepted where floats are."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, source, key)
            except ParamsError as err:
                errors.append(err)
        raise ParamsError(f"{source}: {key} must be {_describe(hint)}, found {_show(value)}")
    if origin is Literal:
        if value in args:
            return value
        raise ParamsError(f"{source}: {key} must be one of {list(args)}, found {_show(value)}")
    if origin is list:
        if not isinstance(value, list):
            raise ParamsError(f"{source}: {key} must be {_describe(hint)}, found {_show(value)}")
        return [_coerce(item, args[0], source, f"{key}[{i}]") for i, item in enumerate(value)]
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is bool and isinstance(value, bool):
        return value
    if hint in (int, str) and isinstance(value, hint) and not isinstance(value, bool):
        return value
    raise ParamsError(f"{source}: {key} must be {_describe(hint)}, found {_show(value)}")


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin is list:
        return f"a list of {_describe(args[0])}"
    if origin is Literal:
        return f"one of {list(args)}"
    return {int: "an integer", float: "a number", str: "a string",
            bool: "true or false"}.get(hint, str(hint))


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})" if value is not None else "null"
