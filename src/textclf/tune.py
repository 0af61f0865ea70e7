"""`textclf tune`: a hyperparameter search with Optuna whose every trial is a DVC experiment.

    textclf tune --space tune.yaml --study lr --trials 20    # trials lr-0, lr-1, ...
    dvc exp show                                             # their params and test scores
    dvc exp apply lr-7                                       # the best, as the last line says

The --space file gives the params to search (each checked against params.yaml first), the
validation metric and its direction, the sampler and the pruner. Each trial runs as
`dvc exp run --temp -n STUDY-N -S key=value ...`; training reports every epoch's validation
score to the study and stops early where the pruner says (its metrics/train/metrics.json
then says pruned_at_epoch). Run the same command again to continue a study that was
stopped or killed: finished trials are not repeated. The study lives in .tune/STUDY.journal;
the report goes to reports/tune-STUDY.html and .md (docs/tuning.md). Needs Optuna:
pip install 'textclf[tune]'.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from textclf.cores import threads_each
from textclf.errors import Stopped, UserError, exits_on_user_error
from textclf.flags import integer, number, positive_int
from textclf.reporting.experiments import RunFiles
from textclf.sweeps.grid import NAME_PATTERN
from textclf.sweeps.search_space import read_config
from textclf.sweeps.study import (DvcTrials, existing_names, open_study, run_study,
                                  study_lock)
from textclf.sweeps.study_report import write_study_report
from textclf.training.trial import STORAGE_ENV, open_storage


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="textclf tune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", required=True, help="search space and settings (YAML)")
    parser.add_argument("--study", required=True,
                        help="the study's name; its trials are the experiments STUDY-0, ...")
    parser.add_argument("--trials", type=positive_int,
                        help="the study's size in finished trials, counting earlier runs of it "
                             "(default: the file's `trials`)")
    parser.add_argument("--timeout", type=number(0, above_low=True), metavar="SECONDS",
                        help="start no trial after this many seconds (default: the file's "
                             "`timeout`, else none)")
    parser.add_argument("--workers", type=positive_int, default=1,
                        help="trials at once, each with cores/workers threads unless "
                             "OMP_NUM_THREADS is set (default: 1)")
    parser.add_argument("--storage", default=None,
                        help="Optuna storage: a journal file, a .db SQLite file or a URL "
                             f"(default: ${STORAGE_ENV} if set, else .tune/STUDY.journal)")
    parser.add_argument("--join", action="store_true",
                        help="be one of several processes running this study at once (the "
                             "workers of `textclf kfp compile --tune`): trials the others "
                             "are running are theirs, not left over from a killed run")
    parser.add_argument("--worker", type=integer(0, 10_000), default=0,
                        help="with --join: this process's number (1..K; default 0, a "
                             "process alone), so that the workers' samplers are seeded apart")
    parser.add_argument("--params", default="params.yaml", help="params file (params.yaml)")
    parser.add_argument("--train-dir", default=RunFiles.train_dir,
                        help="train's dvclive folder, where trials' scores are read")
    parser.add_argument("--html", help="report page (default: reports/tune-STUDY.html)")
    parser.add_argument("--markdown", help="report summary (default: reports/tune-STUDY.md)")
    args = parser.parse_args(argv)
    if not NAME_PATTERN.fullmatch(args.study):
        parser.error(f"--study {args.study!r}: expected letters, digits, '.', '-' or '_' "
                     f"(it becomes part of git refs), starting with a letter or digit")
    args.html = args.html or f"reports/tune-{args.study}.html"
    args.markdown = args.markdown or f"reports/tune-{args.study}.md"
    return args


def storage_spec(args: argparse.Namespace) -> str:
    """Absolute: each trial runs in a temporary copy of the project. From the environment
    where the URL holds a password (a cluster's workers get it from a secret)."""
    spec = args.storage or os.environ.get(STORAGE_ENV) or f".tune/{args.study}.journal"
    return spec if "://" in spec else str(Path(spec).resolve())


def head_rev(repo: Path) -> str:
    found = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True)
    return found.stdout.strip() if found.returncode == 0 else ""


@exits_on_user_error
def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    config = read_config(args.space, args.params)
    trials = args.trials or config.trials or config.grid_size
    if trials is None:
        raise UserError(f"{args.space}: no study size: give `trials:` there or --trials")
    repo, spec = Path.cwd(), storage_spec(args)
    # Beside the storage, where there is a file; not STORAGE.lock, Optuna's own lock file.
    local = Path(spec).parent if "://" not in spec else repo / ".tune"
    # --join: the other workers hold their own runs; nothing to lock, nothing to recover.
    with (contextlib.nullcontext() if args.join else
          study_lock(local / f"{args.study}.tune-lock")):
        storage = open_storage(spec)
        known = [s.study_name for s in storage.get_all_studies()]
        if args.study not in known and existing_names(repo, args.study):
            raise UserError(f"experiments named {args.study}-N exist already on this commit "
                            f"but {spec} has no study {args.study}: pick another --study, or "
                            f"`dvc exp remove` them")
        study = open_study(config, args.study, storage, baseline=head_rev(repo),
                           worker=args.worker)
        runner = DvcTrials(repo, args.study, spec, config.metric, logs=local / args.study,
                           threads=threads_each(args.workers),
                           files=RunFiles(train_dir=args.train_dir))
        try:     # SIGTERM raises Stopped here (exits_on_user_error installed it)
            run_study(study, storage, config, runner, trials=trials,
                      timeout=args.timeout or config.timeout, workers=args.workers,
                      recover=None if args.join else runner.recover,
                      interrupt=runner.interrupt, shared=args.join)
        except KeyboardInterrupt as stop:
            write_study_report(study, config, args.params, args.html, args.markdown)
            signum = stop.signum if isinstance(stop, Stopped) else signal.SIGINT
            print(f"tune: stopped by {signal.Signals(signum).name}; the same command goes on "
                  f"with study {args.study}", file=sys.stderr)
            raise SystemExit(128 + signum) from None
        write_study_report(study, config, args.params, args.html, args.markdown)


if __name__ == "__main__":
    main()
