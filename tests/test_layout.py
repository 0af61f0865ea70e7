"""The project's shape: commands above wings above shared modules (docs/architecture.md), and
each dvc.yaml stage depends on all the code it runs, so a change to a shared module re-runs
every stage that uses it (and only those)."""

from __future__ import annotations

import ast
import re

import pytest
import yaml

from harness import REPO
from textclf import cli

SRC = REPO / "src"
PACKAGE = SRC / "textclf"
# Imported by everything, importing nothing of the project but each other.
SHARED = {"textclf.params", "textclf.errors", "textclf.outputs", "textclf.canonical",
          "textclf.metrics", "textclf.flags", "textclf.cores"}
# Wings, highest first: a wing may import the wings after it, never one before it.
WINGS = ["serving", "monitoring", "sweeps", "training", "reporting", "model", "data"]


def module_path(name: str):
    """The file of dotted module `name` (a package's __init__.py), or None if not one."""
    path = SRC.joinpath(*name.split("."))
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return path / "__init__.py" if (path / "__init__.py").is_file() else None


def direct_imports(name: str) -> set[str]:
    """textclf modules `name` imports, including imports inside functions (they run when
    the code runs); `from textclf.pkg import mod` counts as the module pkg.mod."""
    found = set()
    for node in ast.walk(ast.parse(module_path(name).read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "textclf":
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if module_path(submodule) else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("textclf.")}
    return found


def imported_modules(name: str) -> set[str]:
    """`name` and every textclf module it imports, directly or through others; package
    __init__ files are left out (test_package_inits_hold_no_code keeps them empty)."""
    seen, todo = set(), [name]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo += direct_imports(current)
    return {m for m in seen if module_path(m) and module_path(m).name != "__init__.py"}


def all_modules() -> list[str]:
    return sorted(".".join(p.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
                  for p in PACKAGE.rglob("*.py"))


def floor(name: str) -> tuple[str, int]:
    """('shared', 0), ('wing', its rank, 1 for the lowest) or ('command', len(WINGS) + 1)."""
    parts = name.split(".")
    if name in SHARED:
        return "shared", 0
    if len(parts) > 2 or (len(parts) == 2 and parts[1] in WINGS):
        return parts[1], len(WINGS) - WINGS.index(parts[1])
    return "command", len(WINGS) + 1


def stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def stage_module(stage: dict) -> str:
    found = re.match(r"textclf\s+(\S+)", stage["cmd"].strip())
    assert found, f"not a textclf command: {stage['cmd']}"
    return cli.module_name(found[1])


def test_the_import_walk_follows_imports_through_modules_and_packages():
    # report imports reporting.replicates, which imports reporting.experiments
    assert {"textclf.report", "textclf.reporting.replicates", "textclf.reporting.experiments",
            "textclf.errors"} <= imported_modules("textclf.report")
    # `from textclf.model.engines import onnx_int8` is the module, not the package
    assert "textclf.model.engines.onnx_int8" in imported_modules("textclf.model.labeller")


@pytest.mark.parametrize("name", all_modules())
def test_imports_point_down_only(name):
    """Commands import wings and shared modules; a wing imports lower wings and shared
    modules; shared modules import only each other. No module imports a command."""
    kind, level = floor(name)
    for imported in direct_imports(name):
        if module_path(imported) is None or imported == "textclf":
            continue
        other, other_level = floor(imported)
        assert other != "command", f"{name} imports the command module {imported}"
        assert other == kind or other_level < level, (
            f"{name} ({kind}) imports {imported} ({other}): dependencies point from commands "
            f"to wings ({' > '.join(WINGS)}) to shared modules")


def test_every_top_level_module_is_a_command_or_shared():
    top = {m for m in all_modules() if m.count(".") == 1 and m.split(".")[1] not in WINGS}
    commands = {cli.module_name(c) for c in cli.COMMANDS} | {"textclf.cli"}
    assert top - SHARED == commands, "a top-level module that is no command belongs in a wing"


def test_package_inits_hold_no_code():
    """Stages do not list __init__ files in their deps: that holds while they only hold a
    docstring naming the wing's job (and textclf's version)."""
    for init in PACKAGE.rglob("__init__.py"):
        tree = ast.parse(init.read_text(encoding="utf-8"))
        assert ast.get_docstring(tree), f"{init}: no docstring naming the wing's job"
        code = [n for n in tree.body[1:] if not (isinstance(n, ast.Assign) and
                                                  n.targets[0].id == "__version__")]
        assert not code, f"{init}: holds code; put it in a module"


@pytest.mark.parametrize("name", list(stages()))
def test_each_stage_depends_on_every_module_it_runs(name):
    stage = stages()[name]
    module = stage_module(stage)
    deps = {str(d) for d in stage.get("deps", [])}
    needed = {str(module_path(m).relative_to(REPO)) for m in imported_modules(module)
              if m != "textclf.cli"}

    assert str(module_path(module).relative_to(REPO)) in needed
    missing = sorted(needed - deps)
    assert not missing, f"stage {name} runs {missing} but does not list them in deps"
    # and lists no project module it does not run (a change there would re-run it for nothing)
    extra = sorted(d for d in deps if d.startswith("src/textclf/") and d not in needed)
    assert not extra, f"stage {name} lists {extra} in deps but never imports them"
