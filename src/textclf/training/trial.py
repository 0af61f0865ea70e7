"""The Optuna trial a training run reports to, when `textclf tune` started it.

`textclf tune` runs trial N of study S as the DVC experiment `S-N`, with the study's storage
in $TEXTCLF_TUNE_STORAGE and its name in $TEXTCLF_TUNE_STUDY; DVC names the running
experiment in $DVC_EXP_NAME. `train` then reports each epoch's validation metric to the
trial and ends training after the epoch at which the study's pruner says so. Any other run
(no such variables, or an experiment not named after the study) trains as always:
`TrialReport.from_env` returns None and Optuna is never imported.

Optuna keeps neither the metric nor the pruner in its storage, so the study records both as
user attributes (textclf.sweeps.study writes them) and the training process rebuilds the
pruner from them here.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Mapping

from textclf.errors import UserError
from textclf.training.state import EpochResult

STORAGE_ENV = "TEXTCLF_TUNE_STORAGE"
STUDY_ENV = "TEXTCLF_TUNE_STUDY"
# The study's user attributes that the training process reads.
METRIC_ATTR = "metric"
PRUNER_ATTR = "pruner"
# What an epoch can report: the EpochResult fields of the validation split, named as
# metrics/train/metrics.json's `best` names them.
EPOCH_METRICS = ("val_f1_macro", "val_accuracy", "val_loss")
PRUNERS = {"none": "NopPruner", "median": "MedianPruner", "percentile": "PercentilePruner",
           "successive_halving": "SuccessiveHalvingPruner", "hyperband": "HyperbandPruner",
           "threshold": "ThresholdPruner"}
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


def import_optuna():
    try:
        import optuna
    except ImportError:
        raise UserError("textclf tune needs Optuna: pip install 'textclf[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def open_storage(spec: str):
    """An Optuna storage from a path (a journal file, or SQLite for .db/.sqlite) or a URL."""
    optuna = import_optuna()
    if "://" in spec:
        return optuna.storages.RDBStorage(spec)
    path = Path(spec)
    if path.suffix in SQLITE_SUFFIXES:
        return optuna.storages.RDBStorage(f"sqlite:///{path.resolve()}")
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def construct(cls, settings: Mapping[str, Any], where: str):
    """`cls(**settings)`, refusing a setting `cls` does not take with a message naming it."""
    accepted = [name for name, p in inspect.signature(cls).parameters.items()
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key in settings:
        if key not in accepted:
            raise UserError(f"{where}.{key}: not a setting of {cls.__name__} "
                            f"(settings: {', '.join(accepted) or 'none'})")
    try:
        return cls(**settings)
    except (TypeError, ValueError) as err:
        raise UserError(f"{where}: {cls.__name__} refuses {dict(settings)}: {err}") from None


def make_pruner(config: Mapping[str, Any], where: str = "pruner"):
    """The pruner `{"name": "median", "n_startup_trials": 2, ...}` describes."""
    optuna = import_optuna()
    settings = dict(config)
    name = settings.pop("name", None)
    if name not in PRUNERS:
        raise UserError(f"{where}.name must be one of {list(PRUNERS)}, found {name!r}")
    return construct(getattr(optuna.pruners, PRUNERS[name]), settings, where)


class TrialReport:
    """Reports a training run's epochs to its trial; knows when the pruner stopped it."""

    def __init__(self, trial, metric: str, experiment: str) -> None:
        self.trial, self.metric, self.experiment = trial, metric, experiment
        self.pruned_at: int | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> TrialReport | None:
        """The trial this run is, or None when `textclf tune` did not start it."""
        storage_spec, study_name = env.get(STORAGE_ENV), env.get(STUDY_ENV)
        experiment = env.get("DVC_EXP_NAME", "")
        number = experiment.removeprefix(f"{study_name}-")
        if not storage_spec or not study_name or number == experiment or not (number.isascii() and number.isdigit()):
            return None
        if "://" not in storage_spec and not Path(storage_spec).is_file():
            raise UserError(f"train: {STORAGE_ENV}={storage_spec}: no such file (textclf tune "
                            f"creates the study's storage before its first trial)")
        optuna = import_optuna()
        storage = open_storage(storage_spec)
        try:
            study_id = storage.get_study_id_from_name(study_name)
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, int(number))
        except KeyError as err:
            raise UserError(f"train: {STUDY_ENV}={study_name} and DVC_EXP_NAME={experiment}, "
                            f"but {storage_spec} has no such trial ({err})") from None
        attrs = storage.get_study_user_attrs(study_id)
        study = optuna.load_study(study_name=study_name, storage=storage,
                                  pruner=make_pruner(attrs[PRUNER_ATTR]))
        state = storage.get_trial(trial_id).state
        if state != optuna.trial.TrialState.RUNNING:
            raise UserError(f"train: trial {number} of study {study_name} is {state.name}, not "
                            f"running: each trial runs once (unset {STUDY_ENV} to train "
                            f"outside the study)")
        return cls(optuna.trial.Trial(study, trial_id), attrs[METRIC_ATTR], experiment)

    def pruned_after(self, result: EpochResult) -> bool:
        """Report the epoch's validation metric; True when the pruner ends training here.
        Steps count from 0 as Optuna's and dvclive's do: step k is epoch k + 1, so a
        pruner's `n_warmup_steps: 1` never stops a run after its first epoch."""
        self.trial.report(getattr(result, self.metric), result.epoch - 1)
        if self.trial.should_prune():
            self.pruned_at = result.epoch
            return True
        return False

