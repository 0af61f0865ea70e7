"""The project's shape: each dvc.yaml stage depends on all the code it runs, so a change to a
shared module re-runs every stage that uses it (and only those)."""

from __future__ import annotations

import ast
import re

import pytest
import yaml

from harness import REPO
from textclf import cli

PACKAGE = REPO / "src" / "textclf"
# The dispatcher only picks the module; what a stage computes is in the module and its imports.
NOT_COMPUTING = {"cli", "__init__"}


def imported_modules(module: str) -> set[str]:
    """textclf modules `module` imports, directly or through other textclf modules,
    including imports inside functions (they run when the stage runs)."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        tree = ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "textclf":
                todo += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("textclf."):
                todo.append(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                todo += [a.name.split(".")[1] for a in node.names
                         if a.name.startswith("textclf.")]
    return {name for name in seen if (PACKAGE / f"{name}.py").is_file()} - NOT_COMPUTING


def stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def stage_module(stage: dict) -> str:
    found = re.match(r"textclf\s+(\S+)", stage["cmd"].strip())
    assert found, f"not a textclf command: {stage['cmd']}"
    return cli.module_name(found[1]).removeprefix("textclf.")


def test_the_import_walk_follows_imports_through_modules():
    # report imports experiments, which imports errors: both are found
    assert {"report", "experiments", "errors", "pages", "charts"} <= imported_modules("report")


@pytest.mark.parametrize("name", list(stages()))
def test_each_stage_depends_on_every_module_it_runs(name):
    stage = stages()[name]
    module = stage_module(stage)
    deps = {str(d) for d in stage.get("deps", [])}
    needed = {f"src/textclf/{m}.py" for m in imported_modules(module)}

    assert f"src/textclf/{module}.py" in needed
    missing = sorted(needed - deps)
    assert not missing, f"stage {name} runs {missing} but does not list them in deps"
    # and lists no project module it does not run (a change there would re-run it for nothing)
    extra = sorted(d for d in deps if d.startswith("src/textclf/") and d not in needed)
    assert not extra, f"stage {name} lists {extra} in deps but never imports them"
