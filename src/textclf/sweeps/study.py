"""A hyperparameter study whose trials are DVC experiments (`textclf tune`).

Optuna proposes each trial's params (the sampler) and its storage, a journal file, holds the
study. Trial N runs as `dvc exp run --temp -n STUDY-N -S key=value ...`: its params, metrics
and model are an ordinary experiment (`dvc exp show`, `dvc exp apply STUDY-N`). The training
process reports every epoch's validation metric to the trial and stops where the pruner says
(textclf.training.trial); the trial's value is read back from what the experiment recorded
(metrics/train/metrics.json: its kept epoch's score, `pruned_at_epoch` when pruned).

Resuming: the study's size counts every finished trial of every run, so the same command
continues a killed study without repeating a finished trial. A trial a kill left running is
told from its experiment when DVC had recorded it; otherwise it is marked failed
(`interrupted`) and its params are queued again as a new trial, which resumes from the
training checkpoint where the interrupted run saved one (textclf.training.checkpoint).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from textclf.errors import UserError
from textclf.reporting.experiments import RunFiles
from textclf.sweeps.search_space import TuneConfig, overrides
from textclf.training.trial import (METRIC_ATTR, PRUNER_ATTR, STORAGE_ENV, STUDY_ENV,
                                    import_optuna, make_pruner)

BASELINE_ATTR = "baseline"


@dataclass(frozen=True)
class Outcome:
    """How a trial's run ended, as its experiment recorded it."""
    state: str                          # complete | pruned | failed | interrupted
    value: float | None = None          # the metric of the epoch the run kept
    epochs: int = 0                     # epochs in the run's curve
    pruned_at_epoch: int | None = None
    message: str = ""
    repeat_of: int | None = None        # a trial with the same params, not run again


RunTrial = Callable[[object, dict], Outcome]      # (optuna trial, params.yaml values)


def open_study(config: TuneConfig, name: str, storage, baseline: str = "",
               say: Callable[[str], None] = print, worker: int = 0):
    """Create the study, or load it to go on; a study keeps its metric and direction.
    `worker` (1..K where K processes share the study) seeds each one's sampler apart, or
    workers started together would draw the same random points."""
    optuna = import_optuna()
    study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True,
                                direction=config.direction, pruner=make_pruner(config.pruner))
    attrs = study.user_attrs
    if METRIC_ATTR not in attrs:
        study.set_user_attr(METRIC_ATTR, config.metric)
        study.set_user_attr(BASELINE_ATTR, baseline)
    elif attrs[METRIC_ATTR] != config.metric or study.direction.name.lower() != config.direction:
        raise UserError(f"study {name} was started with metric {attrs[METRIC_ATTR]} "
                        f"({study.direction.name.lower()}); this space says {config.metric} "
                        f"({config.direction}): values would not compare (use another --study)")
    else:
        check_same_space(study, config, name)
        if baseline and attrs.get(BASELINE_ATTR) not in ("", baseline):
            say(f"tune: note: the study started on commit {attrs[BASELINE_ATTR][:7]}; trials "
                f"from now on start from {baseline[:7]}")
    study.set_user_attr(PRUNER_ATTR, config.pruner)      # what each training process prunes with
    study.sampler = config.make_sampler(seed_offset=len(study.trials) + 100_000 * worker)
    return study


def check_same_space(study, config: TuneConfig, name: str) -> None:
    """A study goes on only over the space it searched: Optuna cannot ask a trial for a key
    whose range changed kind (log_uniform to choice) or choices."""
    check = import_optuna().distributions.check_distribution_compatibility
    now = config.distributions()
    for trial in study.get_trials(deepcopy=False):
        for key, before in trial.distributions.items():
            if key not in now:
                continue
            try:
                check(before, now[key])
            except ValueError:
                raise UserError(f"study {name} searched params.{key} as {_space(before)}; "
                                f"this space says {_space(now[key])}: one study cannot mix "
                                f"them (use another --study, or the old space)") from None


def _space(distribution) -> str:
    """An Optuna distribution as a space file writes it: log_uniform: [1e-05, 0.001]."""
    choices = getattr(distribution, "choices", None)
    if choices is not None:
        return f"choice: {list(choices)}"
    kind = ("int" if type(distribution).__name__ == "IntDistribution" else
            "log_uniform" if distribution.log else "uniform")
    return f"{kind}: [{distribution.low}, {distribution.high}]"


def counted(study) -> int:
    """Trials that use up the study's size: finished ones, except those a stop interrupted."""
    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state.is_finished() and not t.user_attrs.get("interrupted"))


def finish(study, storage, number: int, params: dict, outcome: Outcome) -> None:
    """Tell the study how trial `number` ended; an interrupted trial's params go again."""
    optuna = import_optuna()
    attrs = {"epochs": outcome.epochs, "pruned_at_epoch": outcome.pruned_at_epoch,
             "error": outcome.message or None, "interrupted": outcome.state == "interrupted",
             "repeat_of": outcome.repeat_of}
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(study.study_name), number)
    for key, value in attrs.items():
        if value:
            storage.set_trial_user_attr(trial_id, key, value)
    states = optuna.trial.TrialState
    if outcome.state == "complete":
        study.tell(number, outcome.value)
    elif outcome.state == "pruned":
        study.tell(number, state=states.PRUNED)
    else:
        study.tell(number, state=states.FAIL)
    if outcome.state == "interrupted":
        study.enqueue_trial(params)


def run_study(study, storage, config: TuneConfig, run_trial: RunTrial, *, trials: int,
              timeout: float | None = None, workers: int = 1,
              recover: Callable[[int], Outcome] | None = None,
              interrupt: Callable[[], None] = lambda: None,
              say: Callable[[str], None] = print, shared: bool = False) -> None:
    """Run trials until the study has `trials` counted ones, `timeout` seconds have passed
    (no trial starts after it) or the grid is exhausted; `workers` at once. First, trials
    an earlier run left running are told what `recover(number)` finds. On Ctrl-C, no trial
    starts, `interrupt()` stops the running ones, and KeyboardInterrupt goes on up once
    they are told. `shared`: other processes run this study at once (`tune --join`), so
    every running trial in the storage counts against the size, not only this process's
    (two that ask at the same moment can still overshoot it by one trial each)."""
    optuna = import_optuna()
    lock, stop = threading.Lock(), threading.Event()
    deadline = None if timeout is None else time.monotonic() + timeout
    running = [0]
    if recover is not None:
        for left in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            outcome = recover(left.number)
            say(f"tune: trial {left.number} was left running by an earlier run: {outcome.state}")
            finish(study, storage, left.number, left.params, outcome)

    def next_trial():
        with lock:
            exhausted = (isinstance(study.sampler, optuna.samplers.GridSampler)
                         and study.sampler.is_exhausted(study))
            in_flight = (len(study.get_trials(deepcopy=False, states=(
                optuna.trial.TrialState.RUNNING,))) if shared else running[0])
            if (stop.is_set() or exhausted or counted(study) + in_flight >= trials
                    or (deadline is not None and time.monotonic() > deadline)):
                return None
            running[0] += 1
            return study.ask(config.distributions())

    def work() -> None:
        while (trial := next_trial()) is not None:
            params = config.suggest(trial)
            say(f"tune: trial {trial.number}: " + " ".join(overrides(params)))
            with lock:
                outcome = repeated(study, trial)
            try:
                outcome = outcome or run_trial(trial, params)
            except Exception as err:       # a bug in a runner must not leave the trial running
                outcome = Outcome("failed", message=f"{type(err).__name__}: {err}")
            with lock:
                finish(study, storage, trial.number, trial.params, outcome)
                running[0] -= 1
            say(f"tune: trial {trial.number} {describe(outcome, config.metric)}")

    # Waited for through events, not Thread.join: a join that Ctrl-C interrupts marks its
    # thread finished while it still runs (CPython's _wait_for_tstate_lock), and the
    # trial would be left running.
    done = [threading.Event() for _ in range(workers)]
    failures: list[Exception] = []

    def worker(finished: threading.Event) -> None:
        try:
            work()
        except Exception as err:    # a bug: no more trials start, and the run fails after
            failures.append(err)
            stop.set()
        finally:
            finished.set()

    threads = [threading.Thread(target=worker, args=(finished,), daemon=True)
               for finished in done]
    try:
        for thread in threads:
            thread.start()
        for finished in done:
            while not finished.wait(0.5):
                pass
    except KeyboardInterrupt:
        stop.set()
        interrupt()
        # Only the workers that run: Ctrl-C may come while the others are being started,
        # and one that starts after `stop` takes no trial (next_trial), so none is left.
        for thread, finished in zip(threads, done):
            while thread.is_alive() and not finished.wait(0.5):
                pass
        raise
    if failures:
        raise failures[0]


def repeated(study, trial) -> Outcome | None:
    """The outcome of a finished trial with the same params: samplers propose a point of a
    discrete space again, and training it again would give the same numbers (a seeded,
    deterministic pipeline), so it is told that outcome at no cost (Optuna's FAQ does the same)."""
    states = import_optuna().trial.TrialState
    for done in study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED)):
        if done.params == trial.params and not done.user_attrs.get("repeat_of"):
            return Outcome("complete" if done.state == states.COMPLETE else "pruned",
                           value=done.value, epochs=done.user_attrs.get("epochs", 0),
                           pruned_at_epoch=done.user_attrs.get("pruned_at_epoch"),
                           repeat_of=done.number)
    return None


def describe(outcome: Outcome, metric: str) -> str:
    if outcome.repeat_of is not None:
        return f"{outcome.state}: the params of trial {outcome.repeat_of}, not run again"
    if outcome.state == "complete":
        return f"complete: {metric} {outcome.value:.4f} ({outcome.epochs} epochs)"
    if outcome.state == "pruned":
        return f"pruned after epoch {outcome.pruned_at_epoch}"
    return f"{outcome.state}{': ' + outcome.message if outcome.message else ''}"


@dataclass
class DvcTrials:
    """Runs a trial as a DVC experiment in a temporary copy of the workspace (`--temp`)."""
    repo: Path
    study: str
    storage: str                    # absolute path or URL: the run is in another folder
    metric: str
    logs: Path
    threads: int = 1                # OMP_NUM_THREADS of each run, unless set already
    files: RunFiles = field(default_factory=RunFiles)
    _children: set = field(default_factory=set, init=False, repr=False)
    _stopping: bool = field(default=False, init=False, repr=False)
    _starting: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __call__(self, trial, params: dict) -> Outcome:
        name = f"{self.study}-{trial.number}"
        # --wait-for-lock: another trial's DVC may hold the repository's lock for a moment.
        command = ["dvc", "--wait-for-lock", "exp", "run", "--temp", "-n", name]
        for override in overrides(params):
            command += ["-S", override]
        env = {**os.environ, STORAGE_ENV: self.storage, STUDY_ENV: self.study,
               "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(self.threads))}
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        with open(log, "w", encoding="utf-8") as out:
            with self._starting:
                # Its own session, so a Ctrl-C reaches it through interrupt() and tune sees
                # it end (a checkpoint saved) before it marks the trial interrupted.
                child = subprocess.Popen(command, cwd=self.repo, env=env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
                self._children.add(child)
                started(child, log)
            returncode = child.wait()
            self._children.discard(child)
        if returncode != 0:
            state = "interrupted" if self._stopping else "failed"
            return Outcome(state, message=f"{last_error(log)} (log: {log})")
        return self.recorded(trial.number) or Outcome(
            "failed", message=f"dvc exp run recorded no {self.files.train_dir}/metrics.json")

    def recorded(self, number: int) -> Outcome | None:
        """The outcome experiment `STUDY-number` recorded, or None if there is none."""
        import dvc.api
        from dvc.exceptions import DvcException

        try:
            fs = dvc.api.DVCFileSystem(str(self.repo), rev=f"{self.study}-{number}")
            scores = json.loads(fs.read_text(f"{self.files.train_dir}/metrics.json"))
        except (DvcException, FileNotFoundError):
            return None
        pruned = scores.get("pruned_at_epoch")
        return Outcome("pruned" if pruned else "complete", value=scores["best"][self.metric],
                       epochs=scores["step"] + 1, pruned_at_epoch=pruned)

    def recover(self, number: int) -> Outcome:
        return self.recorded(number) or Outcome("interrupted", message="no experiment recorded")

    def interrupt(self) -> None:
        """Ask every running trial to stop as Ctrl-C would (training saves a checkpoint)."""
        self._stopping = True
        for child in list(self._children):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGINT)


def started(child: subprocess.Popen, log: Path, poll_s: float = 0.2) -> None:
    """Wait until `dvc exp run --temp` has taken its run from DVC's queue of temporary runs.
    Each run adds itself to that queue and then takes the first entry: two starting at
    once could each take the other's (its params under the other's name). DVC prints
    "Reproducing experiment" once it has taken one."""
    while child.poll() is None and "Reproducing experiment" not in log.read_text(
            encoding="utf-8", errors="replace"):
        time.sleep(poll_s)


def last_error(log: Path) -> str:
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    errors = [line for line in lines if line.lower().startswith("error")]
    return (errors or lines or ["no output"])[-1].strip()


def existing_names(repo: Path, study: str) -> list[str]:
    """Experiments of HEAD already named like this study's trials."""
    listed = subprocess.run(["dvc", "exp", "ls", "--name-only"], cwd=repo, capture_output=True,
                            text=True)
    return [name for name in listed.stdout.split()
            if name.startswith(f"{study}-")
            and (number := name.removeprefix(f"{study}-")).isascii() and number.isdigit()]


@contextlib.contextmanager
def study_lock(path: Path) -> Iterator[None]:
    """One `textclf tune` per study at a time (its workers are threads of that process)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:                   # Windows: no flock; nothing to hold
        yield
        return
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{path}: another textclf tune is running this study") from None
        yield
