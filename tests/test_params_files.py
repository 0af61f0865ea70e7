"""The params files shipped beside params.yaml (named recipes such as params-sst5.yaml) are
valid params files that change only data and training, so copying one over params.yaml
gives a run comparable with the default's."""

from __future__ import annotations

import dataclasses

import pytest

from conftest import REPO
from textclf.params import load_params

RECIPES = sorted(REPO.glob("params-*.yaml"))


def test_there_is_a_recipe_file():
    assert [path.name for path in RECIPES] == ["params-sst5.yaml"]


@pytest.mark.parametrize("path", RECIPES, ids=lambda path: path.name)
def test_a_recipe_file_is_valid_and_changes_only_data_and_train(path):
    recipe, default = load_params(path), load_params(REPO / "params.yaml")
    assert recipe.model == default.model and recipe.evaluate == default.evaluate
    changed = {f"train.{key}" for key, value in dataclasses.asdict(recipe.train).items()
               if value != getattr(default.train, key)}
    assert changed, f"{path.name} trains exactly like params.yaml"
    # Every lever it turns on is a documented param of the training page's lever table.
    levers = (REPO / "docs" / "training.md").read_text(encoding="utf-8")
    assert all(f"`{key}`" in levers for key in changed), changed
