"""Typed, validated view of params.yaml.

Every stage reads params.yaml through `load_params`, so a typo or an impossible
value stops the stage with a message that names the key, before any work.
params.yaml is read the way DVC reads it (ruamel.yaml, YAML 1.2), so what a stage
uses is what `dvc params diff` and dvc.lock show.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union, get_args

import yaml
from ruamel.yaml import YAML
from ruamel.yaml import YAMLError as RuamelYAMLError
from ruamel.yaml.constructor import DuplicateKeyError

from textclf.canonical import normalize_label
from textclf.errors import UserError

Label = Union[str, int]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
# Labelling (evaluate, predict, serve, drift) may also go through ONNX Runtime's int8 model,
# what predict and serve answer with on CPUs without AMX (textclf.model.labeller).
LabellingPrecision = Literal[Precision, "int8"]
# The one list every command's --precision offers.
PRECISIONS: tuple[str, ...] = get_args(LabellingPrecision)


class ParamsError(UserError):
    """params.yaml has an unknown key, a wrong type or an impossible value."""


MAX_SEED = 2**32 - 1  # numpy's legacy seeding and many tools take 32-bit seeds


@dataclass(frozen=True)
class DataParams:
    path: str
    text_column: str = "text"
    label_column: str = "label"
    labels: Optional[list[Label]] = None
    val_size: float = 0.1
    test_size: float = 0.2
    class_ratio: Optional[list[float]] = None
    overlap: Literal["error", "drop_from_train"] = "error"
    seed: int = 42

    def check(self, fail) -> None:
        if not self.path.strip():
            fail("path", "a data file or a folder of split files", self.path)
        for key in ("val_size", "test_size"):
            if not 0 < getattr(self, key) < 1:
                fail(key, "a fraction strictly between 0 and 1", getattr(self, key))
        if self.label_column == self.text_column:
            fail("label_column", f"a column other than data.text_column "
                 f"({self.text_column!r})", self.label_column)
        if self.val_size + self.test_size >= 1:
            fail("test_size", f"val_size + test_size below 1 (val_size is {self.val_size})",
                 self.test_size)
        if self.labels is not None:
            _check_labels("labels", self.labels, fail,
                          "null or a list of at least 2 distinct labels", minimum=2)
        if self.class_ratio is not None:
            if any(not math.isfinite(r) or r <= 0 for r in self.class_ratio):
                fail("class_ratio", "null or a list of positive numbers", self.class_ratio)
            if self.labels is not None and len(self.class_ratio) != len(self.labels):
                fail("class_ratio", f"one number per label ({len(self.labels)} labels: "
                     f"{self.labels})", self.class_ratio)
        _check_seed(self.seed, fail)


def _check_labels(key: str, labels: list[Label], fail, expected: str, minimum: int) -> None:
    """Labels are compared as the data's labels are (see textclf.canonical)."""
    names = [normalize_label(label) for label in labels]
    if len(names) < minimum:
        fail(key, expected, labels)
    if None in names:
        fail(key, f"{expected}; item {names.index(None)} is blank", labels)
    for j, name in enumerate(names):
        i = names.index(name)
        if i < j:
            fail(key, f"{expected}; items {i} and {j} ({labels[i]!r} and {labels[j]!r}) "
                 f"are the same label once spaces, invisible characters and number "
                 f"spellings are normalised", labels)


def _check_seed(seed: int, fail) -> None:
    if not 0 <= seed <= MAX_SEED:
        fail("seed", f"an integer from 0 to {MAX_SEED}", seed)


@dataclass(frozen=True)
class ModelParams:
    name: str
    max_length: int = 128
    init_from: Optional[str] = None
    drop_labels: list[Label] = field(default_factory=list)  # init_from's labels to remove

    def check(self, fail) -> None:
        if not self.name.strip():
            fail("name", "a Hugging Face model id or a local directory", self.name)
        if self.init_from is not None and not self.init_from.strip():
            fail("init_from", "null or a model folder to start from", self.init_from)
        if not 8 <= self.max_length <= 8192:
            fail("max_length", "an integer between 8 and 8192", self.max_length)
        if self.drop_labels and self.init_from is None:
            fail("drop_labels", "[] while model.init_from is null (labels are dropped from "
                 "the model that model.init_from names)", self.drop_labels)
        _check_labels("drop_labels", self.drop_labels, fail,
                      "a list of distinct labels of the model.init_from folder", minimum=0)

    def labels_to_drop(self) -> list[str]:
        """drop_labels spelt as the data's labels are (textclf.canonical)."""
        return [normalize_label(label) for label in self.drop_labels]


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
    # Recipe levers, all off by default (benchmarks/sst5_recipe.md measures each):
    label_smoothing: float = 0.0          # weight of the uniform target in the loss
    rdrop: float = 0.0                    # R-Drop: weight of the two-dropout-pass KL term
    layer_lr_decay: float = 1.0           # lr x decay^depth-from-top per encoder layer
    ema_decay: Optional[float] = None     # validate/keep an exponential average of weights
    resume: bool = True
    processes: int = 1
    seed: int = 42

    def check(self, fail) -> None:
        for key in ("batch_size", "epochs", "processes"):
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
        if not 0 <= self.label_smoothing < 1:
            fail("label_smoothing", "a fraction in [0, 1)", self.label_smoothing)
        if self.rdrop < 0:
            fail("rdrop", "a number >= 0 (0 = off)", self.rdrop)
        if not 0 < self.layer_lr_decay <= 1:
            fail("layer_lr_decay", "a factor in (0, 1] (1 = off)", self.layer_lr_decay)
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            fail("ema_decay", "null (off) or a decay in (0, 1), e.g. 0.999", self.ema_decay)
        _check_seed(self.seed, fail)


@dataclass(frozen=True)
class EvaluateParams:
    batch_size: int = 64
    precision: LabellingPrecision = "auto"

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
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    try:
        raw = parse_yaml(text)
    except RuamelYAMLError as err:
        raise ParamsError(f"{path}{yaml_problem(err)}") from None
    _refuse_ambiguous(raw, _load_yaml_1_1(text), str(path), key="")
    return params_from_dict(raw, source=str(path))


def parse_yaml(text: str) -> Any:
    """YAML as DVC reads params.yaml, dvc.yaml and dvc.lock (the call
    dvc.utils.serialize.parse_yaml makes): YAML 1.2, so `1e-4` is a number and `yes` a
    string. Raises ruamel's YAMLError on bad syntax (`yaml_problem` says it in one line)."""
    return YAML(typ="safe").load(text)


def yaml_problem(err: Exception) -> str:
    """ruamel's error in one line: where, and what (its own text runs to a dozen lines)."""
    mark, problem = getattr(err, "problem_mark", None), getattr(err, "problem", None)
    where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    key = re.search(r'duplicate (?:merge )?key "(.*)" with value', problem or "")
    if isinstance(err, DuplicateKeyError) and key:
        first = err.context_mark.line + 1 if getattr(err, "context_mark", None) else None
        return (f"{where}: the key {key[1]!r} is given twice in one section"
                f"{f' (the section starts on line {first})' if first else ''}; expected "
                f"each key once (DVC would refuse the file too)")
    context = getattr(err, "context", None)
    return (f"{where}: not valid YAML: {problem or str(err).splitlines()[0]}"
            f"{f' ({context})' if context else ''}")


def _load_yaml_1_1(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None  # ruamel read it; nothing to compare with


def _refuse_ambiguous(v12: Any, v11: Any, source: str, key: str) -> None:
    """Refuse a value that YAML 1.1 readers (PyYAML, many editors' tools) silently read as
    another value: `0755` (755 for DVC, 493 in 1.1), `1:30` ('1:30' vs 90), `yes`, `on`.

    A 1.1 reading that is a string is harmless (it fails loudly wherever it is
    used), so `1e-4`, a number for DVC, is accepted.
    """
    if isinstance(v12, dict) and isinstance(v11, dict) and len(v12) == len(v11):
        for (k12, item12), (k11, item11) in zip(v12.items(), v11.items()):
            _refuse_ambiguous(k12, k11, source, f"{key}.{k12} (the key itself)".lstrip("."))
            _refuse_ambiguous(item12, item11, source, f"{key}.{k12}".lstrip("."))
    elif isinstance(v12, list) and isinstance(v11, list) and len(v12) == len(v11):
        for i, (item12, item11) in enumerate(zip(v12, v11)):
            _refuse_ambiguous(item12, item11, source, f"{key}[{i}]")
    elif not isinstance(v11, (str, dict, list)) and not _same(v12, v11):
        raise ParamsError(
            f"{source}: {key or 'top level'} is ambiguous: DVC (YAML 1.2) reads {_show(v12)}, "
            f"YAML 1.1 tools read {_show(v11)}; write it so that both agree (quote text "
            f"such as \"yes\" or \"1:30\", use true/false for a switch, drop a number's "
            f"leading zeros)")


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and (a == b or (isinstance(a, float) and a != a and b != b))


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
    for name, spec in fields.items():
        key = prefix + name
        if name not in raw:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                raise ParamsError(f"{source}: missing key {key}")
            continue
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, raw[name], source, prefix=key + ".")
        else:
            values[name] = _coerce(raw[name], hint, source, key)
            _check_finite(values[name], source, key)
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


def _check_finite(value: Any, source: str, key: str) -> None:
    """.nan and .inf are floats to YAML; no learning rate, fraction or ratio may be one."""
    numbers = value if isinstance(value, list) else [value]
    if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
        expected = "finite numbers" if isinstance(value, list) else "a finite number"
        raise ParamsError(f"{source}: {key} must be {expected}, found {_show(value)}")


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
