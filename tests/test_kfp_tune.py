"""A study on Kubeflow Pipelines (`textclf kfp compile|run --tune`): K workers sharing one
Optuna storage whose URL comes from a Kubernetes secret, never from the YAML; and (slow) a
whole study through `kfp.local`, 2 workers sharing a journal file, every trial pushed to a
bare git origin as a DVC experiment."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import REPO, set_params
from credential_scan import credential_findings
from remote_project import base_env, call, isolate

pytest.importorskip("kfp", reason="the kfp extra is not installed")
optuna = pytest.importorskip("optuna", reason="the tune extra is not installed")

from textclf.sweeps.study_worker import (WorkerJob, WorkerResult, run_worker,  # noqa: E402
                                         summary_markdown)
from textclf.training.trial import STORAGE_ENV, open_storage  # noqa: E402

SPACE = """\
metric: val_accuracy
trials: 3
sampler: {name: random, seed: 0}
pruner: none
params:
  train.lr: {log_uniform: [1.0e-4, 1.0e-2]}
  train.batch_size: {choice: [16, 32]}
"""
DATABASE_URL = "postgresql://optuna:Pl4nted-Passw0rd@db.internal:5432/studies"


def _project(dest: Path, space: str = SPACE, commit_space: bool = True) -> Path:
    """params.yaml and a space file in a git repository (all `compile --tune` reads)."""
    dest.mkdir(parents=True)
    shutil.copy(REPO / "params.yaml", dest / "params.yaml")
    (dest / "tune.yaml").write_text(space)
    call(["git", "init", "-q", "-b", "main"], dest)
    call(["git", "add", "params.yaml"] + (["tune.yaml"] if commit_space else []), dest)
    call(["git", "commit", "-qm", "space"], dest)
    return dest


def _compile(project: Path, monkeypatch, *flags: str) -> Path:
    from textclf import kfp_sweep

    monkeypatch.chdir(project)
    monkeypatch.setenv(STORAGE_ENV, DATABASE_URL)      # on the author's machine: not compiled in
    kfp_sweep.main(["compile", "-o", "study.yaml", "--image", "registry.example/textclf:1",
                    "--repo", "https://git.example/team/textclf.git", "--remote",
                    "s3://bucket/store", "-n", "lr", "--tune", "tune.yaml", *flags])
    return project / "study.yaml"


@pytest.fixture
def compiled(tmp_path, monkeypatch) -> dict:
    out = _compile(_project(tmp_path / "p"), monkeypatch, "--parallelism", "4", "--cpu", "2",
                   "--storage-secret", "optuna-db", "--secret", "dvc-s3")
    text = out.read_text()
    spec, platform = yaml.safe_load_all(text)
    return {"text": text, "spec": spec, "platform": platform}


def test_a_compiled_study_runs_k_workers_then_a_summary(compiled):
    spec = compiled["spec"]
    root = spec["root"]["dag"]["tasks"]
    [loop] = [name for name in root if name.startswith("for-loop")]
    assert set(root) == {loop, "study-summary"}
    assert root["study-summary"]["dependentTasks"] == [loop]
    assert json.loads(root[loop]["parameterIterator"]["items"]["raw"]) == [1, 2, 3, 4]
    assert root[loop]["iteratorPolicy"]["parallelismLimit"] == 4
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    assert inputs["study"]["defaultValue"] == "lr"
    assert inputs["space"]["defaultValue"] == "tune.yaml"
    assert inputs["trials"]["defaultValue"] == 3            # the space file's size
    assert inputs["threads"]["defaultValue"] == 2           # the CPU request


def test_the_storage_url_comes_from_a_secret_and_never_into_the_yaml(compiled):
    text = compiled["text"]
    assert DATABASE_URL not in text and "Pl4nted-Passw0rd" not in text
    assert "postgresql" not in text
    assert credential_findings(text) == []
    [executor] = compiled["platform"]["platforms"]["kubernetes"]["deploymentSpec"][
        "executors"].values()
    secrets = {s["secretName"]: {(k["secretKey"], k["envVar"]) for k in s["keyToEnv"]}
               for s in executor["secretAsEnv"]}
    assert secrets == {
        "optuna-db": {("OPTUNA_STORAGE", STORAGE_ENV)},
        "dvc-s3": {("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
                   ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY")}}


def test_the_space_file_is_named_as_the_workers_clone_sees_it(tmp_path, monkeypatch):
    """An absolute path is the committed file at the root (it was refused: 'not in commit')."""
    project = _project(tmp_path / "p")
    out = _compile(project, monkeypatch, "--storage-secret", "db",
                   "--tune", str(project / "tune.yaml"))
    spec, _ = yaml.safe_load_all(out.read_text())
    assert spec["root"]["inputDefinitions"]["parameters"]["space"]["defaultValue"] == \
        "tune.yaml"
    (tmp_path / "elsewhere.yaml").write_text(SPACE)
    with pytest.raises(SystemExit):
        _compile(project, monkeypatch, "--storage-secret", "db",
                 "--tune", str(tmp_path / "elsewhere.yaml"))


def test_one_secret_may_hold_the_storage_and_the_remotes_keys(tmp_path, monkeypatch):
    out = _compile(_project(tmp_path / "p"), monkeypatch, "--storage-secret", "team",
                   "--storage-key", "DB_URL", "--secret", "team")
    _, platform = yaml.safe_load_all(out.read_text())
    [executor] = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values()
    [secret] = executor["secretAsEnv"]
    assert secret["secretName"] == "team"
    assert {(k["secretKey"], k["envVar"]) for k in secret["keyToEnv"]} == {
        ("DB_URL", STORAGE_ENV), ("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
        ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY")}


@pytest.mark.parametrize("space, flags, commit_space, message", [
    (SPACE, [], True, "--tune on a cluster needs --storage-secret NAME"),
    (SPACE, ["--storage-secret", "s", "-S", "train.lr=1e-4,1e-3"], True,
     "-S is for a grid: give one or the other"),
    (SPACE, ["--storage-secret", "s"], False, "--tune tune.yaml: not in commit"),
    (SPACE.replace("train.lr", "train.learning_rate"), ["--storage-secret", "s"], True,
     "train.learning_rate"),
    (SPACE.replace("trials: 3\n", ""), ["--storage-secret", "s"], True, "no study size"),
])
def test_a_bad_study_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys,
                                                           space, flags, commit_space,
                                                           message):
    project = _project(tmp_path / "p", space, commit_space)
    with pytest.raises(SystemExit) as exit_info:
        _compile(project, monkeypatch, *flags)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (project / "study.yaml").exists()


def test_a_worker_without_a_storage_fails_naming_the_variable(monkeypatch):
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    result = run_worker(WorkerJob(repo_url="/nowhere", revision="main", study="s",
                                  space="tune.yaml", trials=2, worker=1))
    assert result.status == "failed" and f"${STORAGE_ENV} is not set" in result.error


def test_worker_results_travel_as_json_and_sum_up_in_order():
    results = [WorkerResult(2, "failed", ("s-1",), "textclf tune: error: a | b"),
               WorkerResult(1, "success", ("s-2", "s-0"))]
    assert [WorkerResult.from_json(r.to_json()) for r in results] == results
    page = summary_markdown("s", results)
    rows = [line for line in page.splitlines() if line.startswith("| 1 ") or
            line.startswith("| 2 ")]
    assert rows == ["| 1 | success | s-2, s-0 |  |",
                    "| 2 | failed | s-1 | textclf tune: error: a \\| b |"]
    assert "3 trials pushed" in page


# --- a study through kfp.local -------------------------------------------------------------


@pytest.mark.slow
def test_two_local_workers_share_the_study_and_push_every_trial(tmp_path_factory,
                                                                tiny_model_dir):
    root = tmp_path_factory.mktemp("kfp-tune")
    isolate(tmp_path_factory.mktemp("settings"))
    author, origin, storage = root / "author", root / "origin.git", root / "storage"
    shutil.copytree(REPO, author, ignore=shutil.ignore_patterns(
        ".venv", ".git", "__pycache__", "*.egg-info", ".pytest_cache", "cache", "tmp",
        "config.local", "prepared", "resampled", "classifier", "reports", ".tune"))
    set_params(author, model={"name": str(tiny_model_dir)}, train={"epochs": 1})
    # two trials, one per worker: each worker asks the shared study for the next
    (author / "tune.yaml").write_text(SPACE.replace("trials: 3", "trials: 2"))
    call(["git", "init", "-q", "-b", "main"], author)
    call(["dvc", "remote", "modify", "--local", "local", "url", storage], author)
    call(["dvc", "repro", "prepare"], author)     # the workers pull it: no trial re-runs it
    call(["dvc", "push"], author)
    call(["git", "add", "-A"], author)
    call(["git", "commit", "-qm", "tiny model, one epoch, a space"], author)
    call(["git", "init", "-q", "--bare", "-b", "main", origin], root)
    call(["git", "remote", "add", "origin", origin], author)
    call(["git", "push", "-q", "origin", "main"], author)
    baseline = call(["git", "rev-parse", "HEAD"], author).stdout.strip()

    summary = root / "summary.md"
    printed = call(["textclf", "kfp", "run", "--local", "--repo", origin, "--remote", storage,
                    "-n", "S", "--tune", "tune.yaml", "--parallelism", "2",
                    "--leaderboard", summary, "--pipeline-root", root / "kfp-root"], author,
                   {**base_env(), "OMP_NUM_THREADS": "1"}, timeout=900).stdout

    study = optuna.load_study(study_name="S",
                              storage=open_storage(str(author / ".tune" / "S.journal")))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    refs = call(["git", "ls-remote", origin, "refs/exps/*"], author).stdout.split("\n")
    pushed = {line.rsplit("/", 1)[-1] for line in refs if line}
    assert pushed == {f"S-{t.number}" for t in study.trials if t.state.name == "COMPLETE"}
    prefix = f"refs/exps/{baseline[:2]}/{baseline[2:]}/"
    assert all(prefix in line for line in refs if line)
    page = summary.read_text()
    assert "| 1 | success |" in page and "| 2 | success |" in page
    assert "2 trials pushed" in page
    # each pushed trial's params are the ones its trial was told to try
    call(["dvc", "exp", "pull", "origin", *sorted(pushed)], author)
    revs = {line.rsplit("/", 1)[-1]: line.split()[0] for line in refs if line}
    for trial in study.trials:
        params = yaml.safe_load(call(["git", "show", f"{revs[f'S-{trial.number}']}:params.yaml"],
                                     author).stdout)
        assert params["train"]["lr"] == pytest.approx(trial.params["train.lr"])
        assert params["train"]["batch_size"] == trial.params["train.batch_size"]
    assert (author / "reports" / "tune-S.md").is_file()
    assert "tune: Best: trial" in printed
