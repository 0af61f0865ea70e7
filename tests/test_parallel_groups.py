"""How the suite is shared out among pytest-xdist workers (tests/conftest.py): the files
that use one expensive session fixture must run on one worker, or each builds it."""

from __future__ import annotations

import re

import pytest

from conftest import LONGEST_FIRST, REPO, SHARED_FIXTURES, SHARED_WORK, work_group


@pytest.mark.parametrize("fixture", SHARED_FIXTURES)
def test_every_file_that_uses_a_shared_walk_runs_in_its_group(fixture):
    users = {path.name for path in (REPO / "tests").glob("test_*.py")
             if re.search(rf"\b{fixture}\b", path.read_text(encoding="utf-8"))}
    users.discard("test_parallel_groups.py")
    assert users and users == {name for name, group in SHARED_WORK.items() if group == fixture}


def test_groups_are_found_from_paths_and_node_ids():
    assert work_group("tests/test_sweep.py::test_x[a/b::c]") == "readme_sweep"
    assert work_group(str(REPO / "tests" / "test_readme.py")) == "readme_tour"
    assert work_group("tests/test_kfp.py::test_y") == "test_kfp.py"
    assert all(group in SHARED_FIXTURES or (REPO / "tests" / group).is_file()
               for group in LONGEST_FIRST), "a renamed test file would lose its place"
