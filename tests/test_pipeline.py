"""The whole pipeline through DVC itself, in a temporary git repository."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run, set_params

pytestmark = pytest.mark.slow


def experiments(project: Path) -> list[dict]:
    """Flatten `dvc exp show --json` into one dict per row with params and metrics."""
    rows = []

    def visit(entry):
        data = entry.get("data") or {}
        if data.get("params") is not None:
            rows.append({"rev": entry.get("rev"), "name": entry.get("name"),
                         "params": data["params"]["params.yaml"]["data"],
                         "metrics": {path: m.get("data", {})
                                     for path, m in (data.get("metrics") or {}).items()}})
        for group in entry.get("experiments") or []:
            for rev in group.get("revs", []):
                visit(rev)

    for entry in json.loads(run(["dvc", "exp", "show", "--json"], project).stdout):
        visit(entry)
    return rows


def test_repro_then_experiment(project, tiny_model_dir):
    set_params(project, model={"name": str(tiny_model_dir)}, train={"epochs": 2})
    run(["git", "commit", "-qam", "tiny model"], project)

    run(["dvc", "repro"], project)
    assert (project / "models/classifier/model.safetensors").is_file()
    baseline = json.loads((project / "metrics/evaluate/metrics.json").read_text())
    assert 0.0 <= baseline["accuracy"] <= 1.0
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "baseline run"], project)

    exp = run(["dvc", "exp", "run", "-S", "train.batch_size=16"], project).stdout
    assert "Running stage 'train'" in exp
    assert "Running stage 'prepare'" not in exp and "Running stage 'resample'" not in exp

    rows = experiments(project)
    by_batch = {}
    for row in rows:
        if row["rev"] == "workspace":
            continue
        by_batch[row["params"]["train"]["batch_size"]] = row
    assert set(by_batch) == {16, 32}, rows
    for row in by_batch.values():
        scores = row["metrics"]["metrics/evaluate/metrics.json"]
        assert 0.0 < scores["f1_macro"] <= 1.0 and 0.0 < scores["accuracy"] <= 1.0
        assert row["metrics"]["metrics/train/metrics.json"]["step"] == 1  # 2 epochs logged

    again = run(["dvc", "repro"], project).stdout
    assert "Running stage" not in again, again
    assert "up to date" in again
