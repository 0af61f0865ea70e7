"""One worker of a study on Kubeflow Pipelines: clone, pull, `textclf tune --join`, push.

`textclf kfp compile --tune` writes K such workers. Each clones the revision, pulls what no
trial re-runs (as a grid point does, for the keys the space searches), then runs `textclf
tune --join` in its clone: it takes trials from the study's shared storage until the study
has its size, each trial `dvc exp run --temp -n STUDY-N` there. Then it pushes every trial
it ran (`dvc exp push origin`), as a grid point pushes its one experiment, so `dvc exp pull
origin` brings the whole study back. A worker whose tune failed still pushes what it ran.

The storage's URL (a database shared by the workers) comes only from the environment,
STORAGE_ENV, which the pipeline fills from a Kubernetes secret: never from the pipeline
YAML, where a password in the URL would be written for anyone to read.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from ruamel.yaml import YAML, YAMLError

from textclf.params import yaml_problem
from textclf.sweeps.point import (PointJob, StepFailed, _env, _run, check_out,
                                  configure_remote, pull_inputs)
from textclf.sweeps.stop import stopped_by_signals
from textclf.training.trial import STORAGE_ENV

RESULT_VERSION = 1


@dataclass(frozen=True)
class WorkerJob:
    repo_url: str                    # git URL or path; experiments are pushed back to it
    revision: str                    # commit every trial starts from
    study: str                       # trials are the experiments STUDY-N
    space: str                       # the space file, a path inside the repository
    trials: int                      # the study's size (over all workers)
    worker: int                      # 1..K, for messages
    dvc_remote: str = ""
    remote_config: tuple[str, ...] = ()
    threads: int = 0                 # OMP_NUM_THREADS for the trials; 0 leaves it unset

    def checkout(self, keys: tuple[str, ...] = ()) -> PointJob:
        """The clone, remote and pull of a grid point whose `-S` keys are `keys` (the
        space's params: the stages they reach re-run, so their outputs are not pulled)."""
        return PointJob(repo_url=self.repo_url, revision=self.revision,
                        name=f"{self.study}-worker-{self.worker}", overrides=keys,
                        dvc_remote=self.dvc_remote, remote_config=self.remote_config,
                        threads=self.threads)


@dataclass(frozen=True)
class WorkerResult:
    worker: int
    status: str                      # "success" or "failed"
    experiments: tuple[str, ...] = ()
    error: str = ""

    def to_json(self) -> str:
        return json.dumps({"version": RESULT_VERSION, **asdict(self)})

    @classmethod
    def from_json(cls, text: str) -> "WorkerResult":
        data = json.loads(text)
        return cls(data["worker"], data["status"], tuple(data["experiments"]), data["error"])


def space_keys(clone: Path, space: str) -> tuple[str, ...]:
    """The params the space file searches (checked again by `textclf tune` itself)."""
    path = clone / space
    if not path.is_file():
        raise StepFailed("space", f"error: {space}: no such file in the revision; commit it")
    try:        # YAML 1.2, as `textclf tune` reads it (sweeps.search_space)
        data = YAML(typ="safe").load(path.read_text(encoding="utf-8")) or {}
    except YAMLError as err:
        raise StepFailed("space", f"error: {space}{yaml_problem(err)}") from None
    params = data.get("params") if isinstance(data, dict) else None
    return tuple(str(key) for key in params) if isinstance(params, dict) else ()


def study_experiments(clone: Path, study: str, job: PointJob) -> list[str]:
    """This clone's experiments named like the study's trials (STUDY-N)."""
    listed = _run("dvc exp ls", ["dvc", "exp", "ls", "--name-only"], clone, _env(job))
    return [name for name in listed.split()
            if name.startswith(f"{study}-")
            and (number := name.removeprefix(f"{study}-")).isascii() and number.isdigit()]


def run_worker(job: WorkerJob) -> WorkerResult:
    """Run the worker end to end; never raises for a failure of its own. SIGINT or SIGTERM
    stops its running step's processes and raises PointStopped (no result)."""
    storage = os.environ.get(STORAGE_ENV, "")
    if not storage:
        return WorkerResult(job.worker, "failed", error=(
            f"no study storage: ${STORAGE_ENV} is not set (compile with --storage-secret, "
            f"a Kubernetes secret whose key holds the database URL)"))
    with stopped_by_signals(), \
            tempfile.TemporaryDirectory(prefix=f"textclf-{job.study}-{job.worker}-") as tmp:
        clone, pushed, error = Path(tmp) / "repo", [], ""
        try:
            check_out(job.checkout(), clone)
            checkout = job.checkout(space_keys(clone, job.space))
            remote = configure_remote(checkout, clone)
            pull_inputs(checkout, clone, remote)
        except StepFailed as err:
            return WorkerResult(job.worker, "failed", error=str(err))
        try:
            # The URL stays in the environment: not in a process listing, not in an error.
            _run("textclf tune", ["textclf", "tune", "--join", "--space", job.space,
                                  "--study", job.study, "--trials", str(job.trials),
                                  "--worker", str(job.worker)],
                 clone, _env(checkout, clone))
        except StepFailed as err:
            error = str(err).replace(storage, f"${STORAGE_ENV}")
        try:
            pushed = study_experiments(clone, job.study, checkout)
            if pushed:
                _run("dvc exp push", ["dvc", "exp", "push", "-r", remote, "origin", *pushed],
                     clone, _env(checkout))
        except StepFailed as err:
            error = "; ".join(filter(None, [error, str(err)]))
            pushed = []
    return WorkerResult(job.worker, "failed" if error else "success", tuple(pushed), error)


def summary_markdown(study: str, results: list[WorkerResult]) -> str:
    """The workers, what each pushed and why a failed one failed."""
    lines = [f"# Study {study}: {len(results)} workers", "",
             "| worker | status | trials pushed | error |", "| ---: | --- | --- | --- |"]
    for result in sorted(results, key=lambda r: r.worker):
        error = result.error.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {result.worker} | {result.status} | "
                     f"{', '.join(result.experiments) or '-'} | {error} |")
    pushed = sorted({name for r in results for name in r.experiments},
                    key=lambda name: int(name.rsplit("-", 1)[1]))
    lines += ["", f"{len(pushed)} trials pushed: `dvc exp pull origin` then `dvc exp show` "
                  f"lists them; `textclf tune` with the same storage writes the study's report."]
    return "\n".join(lines) + "\n"
