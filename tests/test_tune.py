"""`textclf tune`: the search-space file and its errors, the training run reporting to its
trial and stopping where pruned, the study loop (size, resume, interrupted trials), the
report, and once end to end: trials as DVC experiments, pruned, killed and resumed."""

from __future__ import annotations

import _thread
import json
import signal
import threading
from pathlib import Path

import pytest
import yaml

from conftest import LABELS, REPO, toy_reviews
from harness import copy_project, experiments, git_show, run

optuna = pytest.importorskip("optuna")

from textclf.errors import UserError  # noqa: E402
from textclf.sweeps.search_space import overrides, read_config  # noqa: E402
from textclf.sweeps.study import Outcome, counted, open_study, run_study  # noqa: E402
from textclf.sweeps.study_report import html, markdown, summarize  # noqa: E402
from textclf.training.trial import (STORAGE_ENV, STUDY_ENV, TrialReport,  # noqa: E402
                                    open_storage)

SPACE = """\
metric: val_accuracy
trials: 4
sampler: {name: tpe, seed: 0, n_startup_trials: 2}
pruner: {name: median, n_startup_trials: 1, n_warmup_steps: 1}
params:
  train.lr: {log_uniform: [1.0e-5, 1.0e-3]}
  train.batch_size: {choice: [16, 32]}
  data.class_ratio: {choice: [null, [2, 1, 1, 1, 1]]}
  train.epochs: {int: [2, 4]}
"""
GRID = """\
metric: val_f1_macro
sampler: grid
pruner: none
params:
  train.batch_size: {choice: [16, 32]}
  data.class_ratio: {choice: [null, [2, 1, 1, 1, 1]]}
  train.epochs: {int: [2, 3]}
"""


def space_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tune.yaml"
    path.write_text(text)
    return path


def test_a_space_file_reads_as_written(tmp_path):
    config = read_config(space_file(tmp_path, SPACE), REPO / "params.yaml")
    assert (config.metric, config.direction, config.trials, config.timeout) == \
        ("val_accuracy", "maximize", 4, None)
    lr, batch, ratio, epochs = config.space
    assert (lr.key, lr.kind, lr.values) == ("train.lr", "log_uniform", (1e-5, 1e-3))
    assert batch.grid_values == [16, 32] and not batch.as_text
    # Optuna keeps scalar choices only: a list of ratios travels as JSON text
    assert ratio.as_text and ratio.grid_values == ["null", "[2, 1, 1, 1, 1]"]
    assert ratio.value("[2, 1, 1, 1, 1]") == [2, 1, 1, 1, 1] and ratio.value("null") is None
    assert epochs.grid_values == [2, 3, 4]
    assert config.grid_size is None                     # lr is continuous
    assert overrides({"train.lr": 1e-05, "data.class_ratio": [2, 1, 1, 1, 1],
                      "data.labels": ["a b", "c"]}) == \
        ["train.lr=1e-05", "data.class_ratio=[2, 1, 1, 1, 1]", 'data.labels=["a b", "c"]']
    assert type(config.make_sampler()).__name__ == "TPESampler"

    grid = read_config(space_file(tmp_path, GRID), REPO / "params.yaml")
    assert (grid.direction, grid.trials, grid.grid_size) == ("maximize", None, 8)
    from textclf.sweeps.study_report import grid_epochs

    assert grid_epochs(grid, base_epochs=6) == 2 * 2 * (2 + 3)
    sampler = grid.make_sampler()
    assert type(sampler).__name__ == "GridSampler"


@pytest.mark.parametrize("text, message", [
    ("metric: [", "not valid YAML"),
    ("- a list", "top level must be a mapping"),
    ("trails: 3\nparams: {train.lr: {choice: [0.001]}}", "unknown key trails"),
    ("metric: accuracy\nparams: {train.lr: {choice: [0.001]}}",
     "metric must be one of ['val_f1_macro', 'val_accuracy', 'val_loss']"),
    ("metric: val_loss\ndirection: maximize\nparams: {train.lr: {choice: [0.001]}}",
     "direction must be minimize for val_loss"),
    ("trials: 0\nparams: {train.lr: {choice: [0.001]}}", "trials must be null or a positive"),
    ("timeout: -5\nparams: {train.lr: {choice: [0.001]}}", "timeout must be null or a positive"),
    ("sampler: annealing\nparams: {train.lr: {choice: [0.001]}}",
     "sampler.name must be one of ['tpe', 'random', 'grid']"),
    ("sampler: {name: tpe, seeed: 1}\nparams: {train.lr: {choice: [0.001]}}",
     "sampler.seeed: not a setting of TPESampler"),
    ("pruner: {name: wizard}\nparams: {train.lr: {choice: [0.001]}}", "pruner.name must be one of"),
    ("pruner: {name: median, n_warmup: 1}\nparams: {train.lr: {choice: [0.001]}}",
     "pruner.n_warmup: not a setting of MedianPruner"),
    ("pruner: {name: median, n_startup_trials: -1}\nparams: {train.lr: {choice: [0.001]}}",
     "pruner: MedianPruner refuses"),
    ("metric: val_accuracy", "params must map params.yaml keys"),
    ("params: {train.lrr: {choice: [0.001]}}", "params.train.lrr: not a params.yaml key "
     "(keys of train: batch_size, epochs, lr,"),
    ("params: {training.lr: {choice: [0.001]}}", "params.training.lr: not a params.yaml key "
     "(sections: data, model, train, evaluate)"),
    ("params: {train.lr: {loguniform: [0.1, 0.2]}}", "params.train.lr must be one of {choice"),
    ("params: {train.lr: {choice: []}}", "params.train.lr.choice must be a non-empty list"),
    ("params: {train.lr: {choice: [0.1, 0.1]}}", "params.train.lr.choice lists a value twice"),
    ("params: {train.lr: {log_uniform: [0.0, 0.1]}}",
     "params.train.lr.log_uniform must have low < high and low > 0"),
    ("params: {train.lr: {uniform: [0.1, .nan]}}", "two finite numbers"),
    ("params: {train.epochs: {int: [1, 2.5]}}", "params.train.epochs.int must be [low, high], "
     "two integers"),
    ("params: {train.batch_size: {choice: [16, -1]}}",
     "params.train.batch_size: -1 is refused: params.yaml: train.batch_size must be a positive "
     "integer, found -1 (int)"),
    ("params: {train.lr: {log_uniform: [1.0e-5, 2.0]}}",
     "params.train.lr: 2.0 is refused: params.yaml: train.lr must be a learning rate between 0 "
     "and 1"),
    ("params: {data.class_ratio: {choice: [[2, 1]]}}",
     "params.data.class_ratio: [2, 1] is refused: params.yaml: data.class_ratio must be one "
     "number per label"),
    ("sampler: grid\nparams: {train.lr: {log_uniform: [1.0e-5, 1.0e-3]}}",
     "params.train.lr: log_uniform has no finite set of values"),
])
def test_a_bad_space_file_is_refused_naming_the_key(tmp_path, text, message):
    path = space_file(tmp_path, text)
    with pytest.raises(UserError) as error:
        read_config(path, REPO / "params.yaml")
    assert str(error.value).startswith((f"{path}: ", f"{path}, line "))
    assert message in str(error.value)


def test_a_missing_space_file_is_named(tmp_path):
    with pytest.raises(UserError, match="nowhere.yaml: file not found"):
        read_config(tmp_path / "nowhere.yaml", REPO / "params.yaml")


# --- the training run and its trial --------------------------------------------------------

def new_study(tmp_path: Path, text: str, name: str = "s"):
    config = read_config(space_file(tmp_path, text), REPO / "params.yaml")
    storage = open_storage(str(tmp_path / f"{name}.journal"))
    return config, storage, open_study(config, name, storage, say=lambda line: None)


def training(tiny_model_dir: Path, tmp_path: Path, epochs: int):
    """`textclf train` in this process on toy data; returns its metrics.json."""
    from textclf import train
    from textclf.data.dataset import write_labels, write_split

    data = toy_reviews(per_class=12)
    write_split(data, tmp_path / "train.parquet")
    write_split(data.iloc[::3], tmp_path / "val.parquet")
    write_labels(LABELS, tmp_path / "labels.json")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"]["name"] = str(tiny_model_dir)
    params["train"].update(epochs=epochs, batch_size=8, precision="fp32")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))

    def train_run() -> dict:
        train.main(["--params", str(tmp_path / "params.yaml"),
                    "--train", str(tmp_path / "train.parquet"),
                    "--val", str(tmp_path / "val.parquet"),
                    "--labels", str(tmp_path / "labels.json"),
                    "--model-dir", str(tmp_path / "model"), "--live-dir", str(tmp_path / "live"),
                    "--checkpoint-dir", str(tmp_path / "checkpoints")])
        return json.loads((tmp_path / "live" / "metrics.json").read_text())

    return train_run


def test_training_reports_each_epoch_and_stops_where_the_pruner_says(tiny_model_dir, tmp_path,
                                                                      monkeypatch, capsys):
    # val_loss never falls below 0: the threshold prunes at the first step it may, the 2nd
    config, storage, study = new_study(tmp_path, """\
metric: val_loss
pruner: {name: threshold, upper: -1.0, n_warmup_steps: 1}
params: {train.lr: {choice: [0.001]}}
""")
    trial = study.ask(config.distributions())
    train_run = training(tiny_model_dir, tmp_path, epochs=3)

    assert TrialReport.from_env({}) is None
    other = {STORAGE_ENV: str(tmp_path / "s.journal"), STUDY_ENV: "s", "DVC_EXP_NAME": "s-x"}
    assert TrialReport.from_env(other) is None          # not one of the study's experiments
    unpruned = train_run()                              # no study in the environment
    assert unpruned["step"] == 2 and "pruned_at_epoch" not in unpruned

    monkeypatch.setenv(STORAGE_ENV, str(tmp_path / "s.journal"))
    monkeypatch.setenv(STUDY_ENV, "s")
    monkeypatch.setenv("DVC_EXP_NAME", f"s-{trial.number}")
    pruned = train_run()
    assert pruned["pruned_at_epoch"] == 2 and pruned["step"] == 1     # 2 of 3 epochs
    assert "train: pruned after epoch 2 by the study's pruner (experiment s-0)" in \
        capsys.readouterr().out
    assert (tmp_path / "model" / "model.safetensors").is_file()     # kept, as any run's
    reported = study.trials[0].intermediate_values
    assert sorted(reported) == [0, 1]                   # steps from 0: epochs 1 and 2
    assert reported[1] == pytest.approx(pruned["val"]["loss"])

    study.tell(trial.number, state=optuna.trial.TrialState.PRUNED)
    with pytest.raises(SystemExit) as exit_info:        # a finished trial does not run again
        train_run()
    assert exit_info.value.code == 2
    assert "trial 0 of study s is PRUNED, not running" in capsys.readouterr().err


# --- the study loop, with trials that only pretend to train --------------------------------

def replay(curves: dict, config, calls: list | None = None):
    """A runner reporting a made-up validation curve per batch size, pruned as the study's
    pruner says, instead of training."""
    def run_trial(trial, params) -> Outcome:
        if calls is not None:
            calls.append(params)
        curve = curves[params["train.batch_size"]]
        for step, value in enumerate(curve):
            trial.report(value, step)
            if trial.should_prune():
                return Outcome("pruned", epochs=step + 1, pruned_at_epoch=step + 1)
        return Outcome("complete", value=max(curve), epochs=len(curve))
    return run_trial


CHOICES = """\
metric: val_accuracy
sampler: {name: random, seed: 3}
pruner: none
params:
  train.batch_size: {choice: [8, 16, 32]}
  train.lr: {choice: [0.0001, 0.0003]}
"""


def test_the_study_size_counts_earlier_runs_and_nothing_finished_runs_again(tmp_path):
    config, storage, study = new_study(tmp_path, CHOICES)
    runner = replay({8: [0.3, 0.4], 16: [0.2, 0.5], 32: [0.1, 0.2]}, config)
    quiet = {"say": lambda line: None}
    run_study(study, storage, config, runner, trials=2, **quiet)
    first = [(t.number, t.params, t.value) for t in study.trials]
    assert len(first) == 2 and counted(study) == 2

    # the same study again, as a new process would open it: it goes on to 3, no repeats
    storage = open_storage(str(tmp_path / "s.journal"))
    study = open_study(config, "s", storage, say=print)
    run_study(study, storage, config, runner, trials=3, **quiet)
    assert [(t.number, t.params, t.value) for t in study.trials][:2] == first
    assert [t.number for t in study.trials] == [0, 1, 2] and counted(study) == 3
    run_study(study, storage, config, runner, trials=3, **quiet)     # already that size
    assert len(study.trials) == 3


def test_a_study_goes_on_only_over_the_space_it_searched(tmp_path):
    config, storage, study = new_study(tmp_path, CHOICES)
    run_study(study, storage, config, replay({8: [0.3], 16: [0.2], 32: [0.1]}, config),
              trials=2, say=lambda line: None)
    wider = read_config(space_file(tmp_path, CHOICES.replace("[8, 16, 32]", "[8, 16, 32, 64]")),
                        REPO / "params.yaml")

    with pytest.raises(UserError) as error:
        open_study(wider, "s", open_storage(str(tmp_path / "s.journal")), say=print)

    assert str(error.value) == (
        "study s searched params.train.batch_size as choice: [8, 16, 32]; this space says "
        "choice: [8, 16, 32, 64]: one study cannot mix them (use another --study, or the old "
        "space)")
    assert len(study.trials) == 2          # nothing asked, nothing left running


def test_a_bug_in_a_worker_fails_the_run_instead_of_ending_it_quietly(tmp_path):
    config, storage, study = new_study(tmp_path, CHOICES)

    def broken(trial, params):
        raise AssertionError("not reached: a failing runner is told as a failed trial")

    def asking_fails(*args, **kwargs):
        raise ValueError("Cannot set different distribution kind to the same parameter name.")

    study.ask = asking_fails
    with pytest.raises(ValueError, match="different distribution kind"):
        run_study(study, storage, config, broken, trials=2, workers=2, say=lambda line: None)


def test_a_continuous_draw_is_kept_to_ten_significant_digits(tmp_path):
    config, storage, study = new_study(tmp_path, SPACE)
    [lr] = [d for d in config.space if d.key == "train.lr"]

    assert lr.value(6.466422717414563e-05) == 6.466422717e-05
    assert repr(lr.value(1e-05)) == "1e-05"
    [epochs] = [d for d in config.space if d.key == "train.epochs"]
    assert epochs.value(3) == 3 and type(epochs.value(3)) is int


def test_a_shared_study_counts_the_trials_other_workers_are_running(tmp_path):
    """`tune --join` (the workers of `kfp --tune`): a trial another process is running
    counts against the size; the process does not take it for a leftover of a kill."""
    config, storage, study = new_study(tmp_path, CHOICES)
    runner = replay({8: [0.3], 16: [0.2], 32: [0.1]}, config)
    other = open_study(config, "s", open_storage(str(tmp_path / "s.journal")),
                       say=lambda line: None, worker=2)
    theirs = other.ask(config.distributions())              # running in the other worker
    run_study(study, storage, config, runner, trials=3, shared=True, say=lambda line: None)
    states = [t.state.name for t in study.trials]
    assert states == ["RUNNING", "COMPLETE", "COMPLETE"] and theirs.number == 0
    # alone (not shared), the same size counts only its own trials
    (tmp_path / "alone").mkdir()
    config, storage, alone = new_study(tmp_path / "alone", CHOICES)
    alone.ask(config.distributions())
    run_study(alone, storage, config, runner, trials=3, say=lambda line: None)
    assert [t.state.name for t in alone.trials].count("COMPLETE") == 3


def test_workers_of_a_study_draw_apart(tmp_path):
    """Seeded alike, two workers started together would try the same params."""
    config, storage, _ = new_study(tmp_path, CHOICES.replace("seed: 3", "seed: 0"))
    studies = [open_study(config, "s", storage, say=lambda line: None, worker=w)
               for w in (1, 2, 3)]
    draws = [[study.ask(config.distributions()).params for _ in range(2)] for study in studies]
    assert len({json.dumps(d, sort_keys=True) for d in draws}) > 1


def test_an_interrupted_trial_goes_again_and_does_not_count(tmp_path):
    config, storage, study = new_study(tmp_path, CHOICES)
    finished = replay({8: [0.3], 16: [0.5], 32: [0.2]}, config)
    outcomes = iter([Outcome("interrupted", message="stopped"), None])

    def runner(trial, params):
        return next(outcomes) or finished(trial, params)

    run_study(study, storage, config, runner, trials=1, say=lambda line: None)
    first, again = study.trials
    assert first.state.name == "FAIL" and first.user_attrs["interrupted"] is True
    assert again.params == first.params and again.state.name == "COMPLETE"
    assert counted(study) == 1


def test_params_proposed_again_are_told_the_earlier_outcome_without_training(tmp_path):
    config, storage, study = new_study(tmp_path, CHOICES)
    calls = []
    run_study(study, storage, config, replay({8: [0.3, 0.4], 16: [0.5], 32: [0.2]}, config,
                                             calls), trials=12, say=lambda line: None)
    distinct = {json.dumps(t.params, sort_keys=True) for t in study.trials}
    assert len(calls) == len(distinct) < 12                 # 6 points: repeats are certain
    for trial in study.trials:
        if "repeat_of" in trial.user_attrs:
            first = study.trials[trial.user_attrs["repeat_of"]]
            assert trial.params == first.params and trial.value == first.value
            assert trial.intermediate_values == {}          # no epoch trained
    summary = summarize(study, config, base_epochs=2)
    repeat = next(r for r in summary.rows if r.repeat_of is not None)
    assert repeat.experiment == f"s-{repeat.repeat_of}"     # the experiment that has it
    assert f"(repeat of trial {repeat.repeat_of})" in markdown(summary)


def test_a_trial_left_running_is_told_from_its_record_or_run_again(tmp_path):
    config, storage, study = new_study(tmp_path, CHOICES)
    recorded, lost = study.ask(config.distributions()), study.ask(config.distributions())
    records = {recorded.number: Outcome("complete", value=0.7, epochs=3),
               lost.number: Outcome("interrupted", message="no experiment recorded")}
    run_study(study, storage, config, replay({8: [0.3], 16: [0.5], 32: [0.2]}, config),
              trials=2, recover=records.__getitem__, say=lambda line: None)
    trials = study.trials
    assert trials[0].state.name == "COMPLETE" and trials[0].value == 0.7
    assert trials[0].user_attrs["epochs"] == 3
    assert trials[1].state.name == "FAIL" and trials[1].user_attrs["interrupted"]
    assert trials[2].params == trials[1].params and trials[2].state.name == "COMPLETE"
    assert len(trials) == 3


def test_ctrl_c_stops_the_running_trial_and_starts_no_other(tmp_path, default_ctrl_c):
    config, storage, study = new_study(tmp_path, CHOICES)
    asked_to_stop = threading.Event()

    def runner(trial, params):
        _thread.interrupt_main()               # Ctrl-C, while this trial trains
        assert asked_to_stop.wait(10)
        return Outcome("interrupted", message="stopped")

    with pytest.raises(KeyboardInterrupt):
        run_study(study, storage, config, runner, trials=3, workers=2,
                  interrupt=asked_to_stop.set, say=lambda line: None)
    stopped = [t for t in study.trials if t.state.name == "FAIL"]
    queued = [t for t in study.trials if t.state.name == "WAITING"]   # to run next time
    assert 1 <= len(stopped) <= 2 and all(t.user_attrs["interrupted"] for t in stopped)
    assert len(queued) == len(stopped) and counted(study) == 0


def test_ctrl_c_while_the_workers_start_waits_only_for_those_that_run(tmp_path, monkeypatch):
    """Ctrl-C as the second worker is being started: the first is stopped and waited for,
    the second never runs, and the study returns (it waited for ever before)."""
    config, storage, study = new_study(tmp_path, CHOICES)
    asked_to_stop, raised = threading.Event(), []

    def runner(trial, params):
        assert asked_to_stop.wait(10)
        return Outcome("interrupted", message="stopped")

    def study_run():
        try:
            run_study(study, storage, config, runner, trials=3, workers=2,
                      interrupt=asked_to_stop.set, say=lambda line: None)
        except KeyboardInterrupt:
            raised.append("KeyboardInterrupt")

    caller = threading.Thread(target=study_run, daemon=True)      # built before the patch
    real_start, starts = threading.Thread.start, []

    def start(thread):
        starts.append(thread)
        if len(starts) == 2:
            raise KeyboardInterrupt         # as if Ctrl-C came in the middle of the loop
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    real_start(caller)
    caller.join(30)
    assert not caller.is_alive(), "run_study waited for a worker that never started"
    assert raised == ["KeyboardInterrupt"]
    states = [t.state.name for t in study.trials]
    assert "RUNNING" not in states and states.count("FAIL") <= 1
    assert states.count("WAITING") == states.count("FAIL") and counted(study) == 0


def test_the_report_shows_best_so_far_importance_and_pruned_trials(tmp_path):
    config, storage, study = new_study(tmp_path, CHOICES.replace(
        "pruner: none", "pruner: {name: median, n_startup_trials: 2}"))
    curves = {8: [0.3, 0.4, 0.45], 16: [0.2, 0.5, 0.6], 32: [0.1, 0.15, 0.2]}
    for batch_size, lr in [(8, 1e-4), (16, 3e-4), (32, 1e-4), (32, 3e-4), (16, 1e-4), (8, 3e-4)]:
        study.enqueue_trial({"train.batch_size": batch_size, "train.lr": lr})
    run_study(study, storage, config, replay(curves, config), trials=6, say=lambda line: None)
    summary = summarize(study, config, base_epochs=3)

    states = [row.state for row in summary.rows]
    assert "pruned" in states and states.count("complete") >= 2
    epochs = [e for e, _ in summary.progress]
    best = [b for _, b in summary.progress]
    assert epochs == sorted(epochs) and best == sorted(best)            # maximize: never down
    assert epochs[-1] == summary.epochs_trained == sum(len(t.intermediate_values)
                                                       for t in study.trials)
    assert summary.grid_epochs == 6 * 3
    assert set(summary.importances) == {"train.batch_size", "train.lr"}
    best_row = summary.best
    assert best_row.value == max(t.value for t in study.trials if t.state.name == "COMPLETE")
    for row in summary.rows:
        if row.state == "pruned":
            assert row.pruned_at_epoch == row.epochs_trained < 3

    page, text = html(summary), markdown(summary)
    assert "<svg" in page and "<script" not in page
    assert f"```bash\ndvc exp apply {best_row.experiment}\n```" in text
    assert "## Pruned trials" in text and "## Param importance" in text
    assert "train.batch_size=" in text


def test_importance_says_why_it_is_missing(tmp_path):
    config, storage, study = new_study(tmp_path, CHOICES)
    run_study(study, storage, config, replay({8: [0.3], 16: [0.5], 32: [0.2]}, config),
              trials=1, say=lambda line: None)
    summary = summarize(study, config, base_epochs=1)
    assert summary.importances == {}
    assert "need at least 2 completed trials (this study has 1)" in summary.importance_note


# --- end to end: trials as DVC experiments ------------------------------------------------

E2E_SPACE = """\
metric: val_accuracy
sampler: {{name: random, seed: 0}}
pruner: {pruner}
params:
  train.lr: {{log_uniform: [1.0e-4, 1.0e-2]}}
  train.batch_size: {{choice: [16, 32]}}
"""


def test_sigterm_to_tune_writes_the_report_and_exits_143(tmp_path, monkeypatch, capsys):
    from textclf import tune
    from textclf.errors import Stopped

    project = copy_project(tmp_path / "project", "space")
    monkeypatch.chdir(project)
    (project / "tune.yaml").write_text(CHOICES)

    def stopped(*args, **kwargs):
        raise Stopped(signal.SIGTERM)       # as the SIGTERM handler raises it mid-study

    monkeypatch.setattr(tune, "run_study", stopped)
    with pytest.raises(SystemExit) as exit_info:
        tune.main(["--space", "tune.yaml", "--study", "S", "--trials", "1"])
    assert exit_info.value.code == 143
    assert "tune: stopped by SIGTERM; the same command goes on with study S" in \
        capsys.readouterr().err
    assert (project / "reports" / "tune-S.md").is_file()


@pytest.mark.slow
def test_trials_are_dvc_experiments_pruned_killed_and_resumed(tmp_path, tiny_model_dir,
                                                              monkeypatch, capsys):
    from textclf import tune

    project = copy_project(tmp_path / "project", "tiny model", model={"name": str(tiny_model_dir)},
                           train={"epochs": 2})
    monkeypatch.chdir(project)
    for key, value in {"OMP_NUM_THREADS": "1", "DVC_NO_ANALYTICS": "1",
                       "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
                       "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"
                       }.items():
        monkeypatch.setenv(key, value)
    (project / "tune.yaml").write_text(E2E_SPACE.format(pruner="none"))
    tune.main(["--space", "tune.yaml", "--study", "T", "--trials", "2", "--workers", "2"])

    # a kill in the middle of trial 2: the storage says running, DVC recorded nothing
    storage = open_storage(str(project / ".tune" / "T.journal"))
    config = read_config(project / "tune.yaml", project / "params.yaml")
    killed = optuna.load_study(study_name="T", storage=storage).ask(config.distributions())
    # the same study goes on, now pruning every run after its first epoch
    (project / "tune.yaml").write_text(E2E_SPACE.format(
        pruner="{name: threshold, lower: 1.01}"))
    capsys.readouterr()
    tune.main(["--space", "tune.yaml", "--study", "T", "--trials", "3"])
    out = capsys.readouterr().out
    assert "tune: trial 2 was left running by an earlier run: interrupted" in out

    trials = optuna.load_study(study_name="T", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "FAIL", "PRUNED"]
    assert trials[3].params == killed.params                   # the lost trial, run again
    exps = experiments(project)
    assert {"T-0", "T-1", "T-3"} <= set(exps) and "T-2" not in exps
    for trial in (trials[0], trials[1], trials[3]):
        recorded = exps[f"T-{trial.number}"]["params"]["train"]
        assert recorded["lr"] == config.suggest(trial)["train.lr"]   # to 10 digits
        assert recorded["lr"] == pytest.approx(trial.params["train.lr"], rel=1e-9)
        assert recorded["batch_size"] == trial.params["train.batch_size"]
    scores = {n: json.loads(git_show(project, exps[f"T-{n}"]["rev"],
                                     "metrics/train/metrics.json")) for n in (0, 3)}
    assert scores[0]["step"] == 1 and "pruned_at_epoch" not in scores[0]
    assert scores[3]["step"] == 0 and scores[3]["pruned_at_epoch"] == 1
    assert trials[0].value == scores[0]["best"]["val_accuracy"]
    assert sorted(trials[3].intermediate_values) == [0]

    best = max(trials[:2], key=lambda t: (t.value, -t.number))
    assert f"tune: Best: trial {best.number}," in out
    assert f"tune: take it with `dvc exp apply T-{best.number}`" in out
    report = (project / "reports" / "tune-T.md").read_text()
    assert "| 3 | T-3 | pruned |" in report and "| 2 | T-2 | interrupted (" in report
    run(["dvc", "exp", "apply", f"T-{best.number}"], project)
    applied = yaml.safe_load((project / "params.yaml").read_text())["train"]
    assert applied["lr"] == config.suggest(best)["train.lr"]
    # params.yaml and dvc.lock agree: the applied trial is up to date, not stale
    assert "up to date" in run(["dvc", "status"], project).stdout

    # a new study may not take names that experiments of this commit already have
    with pytest.raises(SystemExit) as exit_info:
        tune.main(["--space", "tune.yaml", "--study", "T", "--storage", "other.journal",
                   "--trials", "1"])
    assert exit_info.value.code == 2
    assert "experiments named T-N exist already" in capsys.readouterr().err
