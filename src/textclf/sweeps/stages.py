"""What a sweep point needs from dvc.yaml (pure): which stages its params re-run, so that
only the other stages' outputs are pulled, and where the metrics and confusion matrix are.

DVC decides what re-runs by hashing every stage's deps and outs, so a stage that will not
re-run still needs its outputs (and deps) in the workspace, or DVC would run it again.
Outputs of the stages that re-run are not needed: pulling them would be wasted transfer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textclf.sweeps.grid import DEFAULT_PARAMS_FILE, split_file


def _entry_path(entry: Any) -> str:
    """A deps/outs/metrics entry is 'path' or {'path': {options}}."""
    return entry if isinstance(entry, str) else next(iter(entry))


def _declared_params(stage: dict) -> list[tuple[str, str]]:
    """(file, key) for each `params:` entry: 'train', 'data.seed' or {file: [keys]}."""
    declared = []
    for entry in stage.get("params") or []:
        if isinstance(entry, str):
            declared.append((DEFAULT_PARAMS_FILE, entry))
        else:
            declared += [(path, key) for path, keys in entry.items() for key in keys or []]
    return declared


def _overlaps(a: str, b: str) -> bool:
    """Keys 'train' and 'train.lr' overlap; 'train.lr' and 'train.lr_decay' do not."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def _under(path: str, folder: str) -> bool:
    path, folder = path.rstrip("/"), folder.rstrip("/")
    return path == folder or path.startswith(folder + "/") or folder.startswith(path + "/")


def _reads_param(stage: dict, path: str, key: str) -> bool:
    if any(p == path and _overlaps(k, key) for p, k in _declared_params(stage)):
        return True
    # `${data.path}` in a stage makes DVC track that param too
    return path == DEFAULT_PARAMS_FILE and "${" + key in repr(stage)


def rerun_stages(dvc_yaml: dict, overrides: list[str]) -> set[str] | None:
    """Stages that a point with these `-S` overrides re-runs; None if DVC must decide
    (a `foreach`/`matrix` stage, whose params this reading does not follow)."""
    stages: dict[str, dict] = dvc_yaml.get("stages") or {}
    if any("foreach" in s or "matrix" in s for s in stages.values()):
        return None
    keys = [(path or DEFAULT_PARAMS_FILE, text.partition("=")[0].lstrip("+~"))
            for path, text in map(split_file, overrides)]
    rerun = {name for name, stage in stages.items()
             if any(_reads_param(stage, path, key) for path, key in keys)}
    # Downstream of a stage that re-runs re-runs too: follow outs -> deps until nothing changes.
    grew = True
    while grew:
        outs = [_entry_path(o) for name in rerun for o in stages[name].get("outs") or []]
        more = {name for name, stage in stages.items() if name not in rerun and any(
            _under(_entry_path(dep), out) for dep in stage.get("deps") or [] for out in outs)}
        rerun |= more
        grew = bool(more)
    return rerun


def pull_targets(dvc_yaml: dict, overrides: list[str], dvc_files: list[str]) -> list[str] | None:
    """`dvc pull` targets for a point: the stages that do not re-run and the `.dvc`-tracked
    data; None means pull everything, [] nothing."""
    rerun = rerun_stages(dvc_yaml, overrides)
    if rerun is None:
        return None
    kept = [name for name in dvc_yaml.get("stages") or {} if name not in rerun]
    return kept + sorted(dvc_files)


@dataclass(frozen=True)
class ConfusionPlot:
    path: str        # the JSON file of {actual, predicted} rows
    actual: str      # field of the actual label
    predicted: str   # field of the predicted label


def metrics_files(dvc_yaml: dict) -> list[str]:
    """Every metrics file `dvc metrics show` reads: top-level `metrics:` and stage metrics."""
    files = [_entry_path(m) for m in dvc_yaml.get("metrics") or []]
    for stage in (dvc_yaml.get("stages") or {}).values():
        files += [_entry_path(m) for m in stage.get("metrics") or []]
    return list(dict.fromkeys(files))


def confusion_plot(dvc_yaml: dict) -> ConfusionPlot | None:
    """The first top-level plot drawn with DVC's confusion template, if any."""
    for entry in dvc_yaml.get("plots") or []:
        if not isinstance(entry, dict):
            continue
        for spec in entry.values():
            if not isinstance(spec, dict) or not str(spec.get("template", "")).startswith(
                    "confusion") or not isinstance(spec.get("y"), dict):
                continue
            [(path, actual)] = list(spec["y"].items())[:1]
            if isinstance(spec.get("x"), str) and isinstance(actual, str):
                return ConfusionPlot(path, actual, spec["x"])
    return None


def labels_files(dvc_yaml: dict) -> list[str]:
    """Deps named labels.json: the label order the pipeline writes (prepare's output)."""
    return list(dict.fromkeys(
        _entry_path(dep) for stage in (dvc_yaml.get("stages") or {}).values()
        for dep in stage.get("deps") or [] if _entry_path(dep).endswith("labels.json")))
