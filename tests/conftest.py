"""Shared fixtures: a tiny random transformer built from a config (no download)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pandas as pd
import pytest

# Nothing may come from a model hub in tests (and a blocked network would only
# time out slowly); set before transformers / huggingface_hub are imported.
os.environ["HF_HUB_OFFLINE"] = "1"


def _threads_per_worker() -> int | None:
    """Under pytest-xdist (`-n`, see pyproject.toml): this machine's cores shared out
    among the workers, so that two workers on two cores do not fight over both."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers < 2:
        return None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:          # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // workers)


if _threads_per_worker():
    # Before torch is imported, and inherited by every dvc / textclf subprocess.
    os.environ["OMP_NUM_THREADS"] = str(_threads_per_worker())

# Re-exported: tests import these from conftest or from harness.
from harness import (GIT_IDENTITY, REPO, LoopWalk, OwnDataWalk, SweepWalk,  # noqa: E402,F401
                     TourWalk, copy_project, run, set_params, walk_loop, walk_own_data,
                     walk_sweep, walk_tour)

SST5 = REPO.parent / "shared" / "data" / "sst5"
LABELS = ["very negative", "negative", "neutral", "positive", "very positive"]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer, hidden-size-32 BERT with random weights and the bundled tokenizer."""
    from fault_harness import tiny_model

    return tiny_model(tmp_path_factory.mktemp("tiny-bert"))


def toy_reviews(per_class: int = 30) -> pd.DataFrame:
    """Small labelled texts whose words give the label away, so a tiny model learns."""
    cue = {"very negative": "awful dreadful", "negative": "poor weak",
           "neutral": "okay average", "positive": "good nice", "very positive": "superb brilliant"}
    rows = [{"text": f"review {i}: the {thing} was {cue[label]}", "label": label}
            for label in LABELS for i, thing in
            zip(range(per_class), ["food", "room", "film", "phone", "book", "app"] * per_class)]
    return pd.DataFrame(rows)


@pytest.fixture
def project(tmp_path) -> Path:
    """A copy of the repository as a fresh git repository in tmp_path."""
    return copy_project(tmp_path / "project")


@pytest.fixture(scope="session")
def readme_tour(tmp_path_factory, tiny_model_dir) -> TourWalk:
    """The README's main command and tour, run once in order in one project with the tiny
    model; test_readme checks each claim, test_pipeline goes on."""
    return walk_tour(tmp_path_factory.mktemp("readme-tour"), tiny_model_dir)


@pytest.fixture(scope="session")
def readme_own_data(tmp_path_factory, tiny_model_dir) -> OwnDataWalk:
    """The README's main command and own-data section in a project of their own (the tour
    leaves the workspace as it found it, test_readme checks); test_readme_own_data checks."""
    return walk_own_data(tmp_path_factory.mktemp("readme-own-data"), tiny_model_dir)


@pytest.fixture(scope="session")
def readme_sweep(tmp_path_factory, tiny_model_dir) -> SweepWalk:
    """The README's main command and the sweep section of docs/experiments.md in a project
    of their own (the tour and own-data sections leave the workspace as they found it,
    test_readme and test_readme_own_data check); test_sweep goes on."""
    return walk_sweep(tmp_path_factory.mktemp("readme-sweep"), tiny_model_dir)


@pytest.fixture(scope="session")
def readme_loop(tmp_path_factory, tiny_model_dir) -> LoopWalk:
    """The README's main command, then docs/loop.md (serve, drift, labels, live accuracy)
    in a project of its own; test_loop checks."""
    return walk_loop(tmp_path_factory.mktemp("readme-loop"), tiny_model_dir)


# --- running on several workers (pytest-xdist, `-n 2 --dist loadgroup` in pyproject.toml) ---

# Test files that share one expensive session fixture run on one worker, or each worker
# would build it. The README walk is three groups, each in a project of its own, so that
# the two workers walk them side by side: the tour (`readme_tour`), the own-data section
# (`readme_own_data`) and the sweep of docs/experiments.md (`readme_sweep`).
SHARED_FIXTURES = ("readme_tour", "readme_own_data", "readme_sweep", "readme_loop")
SHARED_WORK = {"test_pipeline.py": "readme_tour", "test_readme.py": "readme_tour",
               "test_readme_own_data.py": "readme_own_data", "test_sweep.py": "readme_sweep",
               "test_loop.py": "readme_loop"}
# The longest groups first (`--durations` on 2 cores), so that no worker starts a
# minutes-long group after the other has run out of work; the rest keep their order.
LONGEST_FIRST = ("readme_sweep", "readme_tour", "test_remote.py", "test_kfp.py",
                 "test_train_resume.py", "readme_own_data", "test_report_browser.py",
                 "test_model_folder.py", "test_distributed.py", "test_model.py", "test_serve.py")


def work_group(test_file: str) -> str:
    """What runs on one worker: a test file (its module fixtures are built once), or the
    files of SHARED_WORK together. `test_file` is a path or a node id."""
    name = test_file.split("::", 1)[0].replace("\\", "/").rsplit("/", 1)[-1]
    return SHARED_WORK.get(name, name)


@pytest.hookimpl(tryfirst=True)     # before xdist reads the marks on each worker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test gets its work group as an `xdist_group` mark (`--dist loadgroup` sends a
    group to one worker as a whole), and the longest groups are put first."""
    def rank(item: pytest.Item) -> int:
        group = work_group(item.nodeid)
        return LONGEST_FIRST.index(group) if group in LONGEST_FIRST else len(LONGEST_FIRST)

    for item in items:
        item.add_marker(pytest.mark.xdist_group(work_group(item.nodeid)))
        if item.get_closest_marker("long") and os.environ.get(LONG_TESTS) != "1":
            item.add_marker(LONG_SKIP)
    items.sort(key=rank)         # stable: the tests of a group keep their order


# The default run stays under 10 minutes on 2 cores: tests marked `long` (a minute or more
# each; a benchmark or other default tests exercise the same path) run where asked.
LONG_TESTS = "TEXTCLF_LONG_TESTS"
LONG_SKIP = pytest.mark.skip(reason=f"long (a minute or more; the default run stays under 10 "
                                    f"minutes): {LONG_TESTS}=1 runs it")


@pytest.fixture
def default_ctrl_c():
    """Ctrl-C as Python handles it by default (KeyboardInterrupt in the main thread). An
    earlier test in this worker process may have left SIGINT ignored or handled otherwise
    (a library's handler that was not given back), and then a SIGINT the test sends does
    nothing: tests of Ctrl-C failed so in suite runs ("the signal did not stop the
    command", "DID NOT RAISE KeyboardInterrupt")."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
