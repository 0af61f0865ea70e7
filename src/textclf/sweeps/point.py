"""One sweep point, as the KFP component runs it: clone, pull, `dvc exp run`, `dvc exp push`.

Every step is a plain `git` / `dvc` command in a temporary clone, so what the cluster does
is what a person would type. Any failure becomes a `PointResult` with status "failed" and
the step's error text: the point fails alone and the leaderboard says why.
Credentials come only from the environment (a Kubernetes secret mapped to env vars).

The experiment's git ref is pushed last, after its data, so a ref on origin means a whole
experiment; a point whose experiment origin has already (the same sweep run again after a
kill) is not run again but reported from that commit (docs/durability.md).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from textclf.params import parse_yaml
from textclf.sweeps.grid import committed_text, overrides_hold
from textclf.sweeps.results import PointResult, flatten_numbers
from textclf.sweeps.stages import confusion_plot, labels_files, metrics_files, pull_targets
from textclf.sweeps.stop import run_in_own_group, stopped_by_signals

SWEEP_REMOTE = "sweep"   # the DVC remote a point pushes to, when the sweep names a url
# Git over HTTPS from a pod: a credential helper that reads these variables (a secret's
# keys), so the token never lands in a file, the clone's config or the pipeline YAML.
GIT_HELPER = '!f() { echo "username=${GIT_USERNAME}"; echo "password=${GIT_PASSWORD}"; }; f'
IDENTITY = {"user.name": "textclf kfp sweep", "user.email": "kfp-sweep@textclf.invalid"}


@dataclass(frozen=True)
class PointJob:
    repo_url: str                    # git URL or path; experiments are pushed back to it
    revision: str                    # commit to start from (the experiments' baseline)
    name: str                        # DVC experiment name
    overrides: tuple[str, ...]       # `-S` values for this point
    dvc_remote: str = ""             # url of the DVC remote; "" = the project's default remote
    remote_config: tuple[str, ...] = ()   # "endpointurl=http://..." (never credentials)
    threads: int = 0                 # OMP_NUM_THREADS for the run; 0 leaves it unset
    # Scores to report besides dvc.yaml's `metrics:` (e.g. dvclive's training summary).
    extra_metrics: tuple[str, ...] = ()


class StepFailed(Exception):
    def __init__(self, step: str, output: str) -> None:
        super().__init__(f"{step}: {error_text(output)}")


def error_text(output: str, limit: int = 600) -> str:
    """The lines that say what went wrong: the stage's `error:` line, then DVC's `ERROR:`."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    ours = [line for line in lines if line.startswith("error:")]
    dvcs = [line for line in lines if line.startswith("ERROR:")]
    text = " / ".join(dict.fromkeys(ours + dvcs)) or " / ".join(lines[-5:]) or "(no output)"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _env(job: PointJob, clone: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    if job.threads > 0:
        env["OMP_NUM_THREADS"] = str(job.threads)
    if clone is not None and (clone / "src" / "textclf").is_dir():
        # Stage commands (`textclf train`) run the revision's code, not the image's copy.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(clone / "src"),
                                                          env.get("PYTHONPATH")]))
    return env


def _run(step: str, cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = run_in_own_group(cmd, cwd, env)   # a stopped point leaves no step running
    if result.returncode != 0:
        raise StepFailed(step, result.stdout + "\n" + result.stderr)
    return result.stdout


def check_out(job: PointJob, clone: Path) -> None:
    env = _env(job)
    helper = ["-c", f"credential.helper={GIT_HELPER}"] if "GIT_PASSWORD" in env else []
    _run("git clone", ["git", *helper, "clone", "-q", "--no-checkout", job.repo_url, str(clone)],
         clone.parent, env)
    _run("git checkout", ["git", "checkout", "-q", "--detach", job.revision], clone, env)
    if helper:
        _run("git config", ["git", "config", "credential.helper", GIT_HELPER], clone, env)
    for key, value in IDENTITY.items():   # DVC commits each experiment
        if subprocess.run(["git", "config", "--get", key], cwd=clone,
                          capture_output=True).returncode != 0:
            _run("git config", ["git", "config", key, value], clone, env)


def configure_remote(job: PointJob, clone: Path) -> str:
    """Point DVC at the sweep's remote (per clone, .dvc/config.local); its name."""
    env = _env(job)
    if job.dvc_remote:
        _run("dvc remote add", ["dvc", "remote", "add", "--local", "--force", "-d",
                                SWEEP_REMOTE, job.dvc_remote], clone, env)
        remote = SWEEP_REMOTE
    else:
        remote = _run("dvc remote default", ["dvc", "remote", "default"], clone, env).strip()
        if not remote:
            raise StepFailed("dvc remote", "error: the project has no default DVC remote "
                                           "and the sweep names none (--remote)")
    for setting in job.remote_config:
        key, _, value = setting.partition("=")
        _run("dvc remote modify", ["dvc", "remote", "modify", "--local", remote, key, value],
             clone, env)
    return remote


def pull_inputs(job: PointJob, clone: Path, remote: str) -> None:
    """Pull what the stages that do not re-run produced; a missing object just re-runs."""
    dvc_yaml = dvc_yaml_of(clone)
    tracked = _run("git ls-files", ["git", "ls-files", "*.dvc"], clone, _env(job)).split()
    targets = pull_targets(dvc_yaml, list(job.overrides), tracked)
    if targets == []:
        return
    _run("dvc pull", ["dvc", "pull", "-r", remote, "--allow-missing", *(targets or [])],
         clone, _env(job))


def experiment_ref(job: PointJob, clone: Path) -> str:
    """Where DVC keeps the experiment: refs/exps/<baseline[:2]>/<baseline[2:]>/<name>."""
    baseline = _run("git rev-parse", ["git", "rev-parse", "HEAD"], clone, _env(job)).strip()
    return f"refs/exps/{baseline[:2]}/{baseline[2:]}/{job.name}"


def read_committed(clone: Path, rev: str) -> Callable[[str], Any]:
    """A reader of params files as commit `rev` has them, the way DVC reads them (YAML 1.2);
    None for a file not there or not YAML."""
    from ruamel.yaml import YAMLError

    def content(path: str) -> Any:
        text = committed_text(clone, rev, path)
        try:
            return None if text is None else parse_yaml(text)
        except YAMLError:
            return None

    return content


def pushed_before(job: PointJob, clone: Path) -> str:
    """The commit of this point's experiment if origin has it already, pushed by an earlier
    run of the same sweep (a ref is pushed only after its data); "" if not. An experiment
    of that name with other params fails the point."""
    ref = experiment_ref(job, clone)
    listed = _run("git ls-remote", ["git", "ls-remote", "origin", ref], clone, _env(job))
    if not listed.strip():
        return ""
    _run("git fetch", ["git", "fetch", "-q", "origin", f"+{ref}:{ref}"], clone, _env(job))
    rev = _run("git rev-parse", ["git", "rev-parse", ref], clone, _env(job)).strip()
    if not overrides_hold(list(job.overrides), read_committed(clone, rev)):
        raise StepFailed("dvc exp push", f"error: origin already has an experiment named "
                                         f"{job.name} with other params; run the sweep "
                                         "under a new name")
    return rev


def take_pushed(job: PointJob, clone: Path, rev: str, remote: str) -> None:
    """The clone at the earlier experiment's commit, with the label order its stages
    wrote (a DVC output: pulled; without it the confusion matrix orders labels by name)."""
    _run("git checkout", ["git", "checkout", "-q", "--detach", rev], clone, _env(job))
    dvc_yaml = dvc_yaml_of(clone)
    if labels_files(dvc_yaml):
        run_in_own_group(["dvc", "pull", "-r", remote, *labels_files(dvc_yaml)], clone,
                         _env(job))


def run_experiment(job: PointJob, clone: Path, remote: str) -> tuple[str, tuple[str, ...]]:
    """`dvc exp run`, `dvc push` of its outputs, then `dvc exp push` of its git ref; the
    experiment's commit and the stages that ran."""
    sets = [arg for override in job.overrides for arg in ("-S", override)]
    printed = _run("dvc exp run", ["dvc", "exp", "run", "-n", job.name, *sets], clone,
                   _env(job, clone))
    ran = tuple(re.findall(r"^Running stage '([^']+)'", printed, re.M))
    ref = experiment_ref(job, clone)
    rev = _run("git rev-parse", ["git", "rev-parse", ref], clone, _env(job)).strip()
    # Data first: `dvc exp push` pushes the ref before the data, and a ref whose data never
    # arrived (a kill in between) would be taken as finished by the next run.
    _run("dvc push", ["dvc", "push", "-r", remote], clone, _env(job))
    printed = _run("dvc exp push", ["dvc", "exp", "push", "--no-cache", "origin", job.name],
                   clone, _env(job))
    # DVC exits 0 without pushing when origin has another experiment of that name.
    remote_ref = _run("git ls-remote", ["git", "ls-remote", "origin", ref], clone, _env(job))
    if not remote_ref.startswith(rev):
        raise StepFailed("dvc exp push", f"error: origin already has an experiment named "
                                         f"{job.name}; run the sweep under a new name\n{printed}")
    return rev, ran


def label_order(path: Path) -> list[str]:
    """The pipeline's label order (prepare's labels.json), read the way the stages read it."""
    from textclf.data.dataset import read_labels

    try:
        return [str(label) for label in read_labels(path)]
    except (KeyError, TypeError):   # a revision from before labels.json was an object
        data = json.loads(path.read_text(encoding="utf-8"))
        return [str(label) for label in data] if isinstance(data, list) else []


def read_scores(clone: Path, extra_metrics: tuple[str, ...] = ()
                ) -> tuple[dict[str, float], tuple[str, ...], tuple]:
    """Metrics of the workspace (flattened, per file), confusion labels and matrix."""
    dvc_yaml = dvc_yaml_of(clone)
    metrics: dict[str, float] = {}
    for path in dict.fromkeys([*metrics_files(dvc_yaml), *extra_metrics]):
        if (clone / path).is_file():
            for key, value in flatten_numbers(json.loads((clone / path).read_text())).items():
                metrics[key if key not in metrics else f"{path}:{key}"] = value
    plot = confusion_plot(dvc_yaml)
    if plot is None or not (clone / plot.path).is_file():
        return metrics, (), ()
    rows = json.loads((clone / plot.path).read_text())
    pairs = [(str(row[plot.actual]), str(row[plot.predicted])) for row in rows]
    known = next((label_order(clone / p) for p in labels_files(dvc_yaml)
                  if (clone / p).is_file()), [])
    seen = sorted({label for pair in pairs for label in pair} - set(known))
    labels = tuple(known) + tuple(seen)
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for actual, predicted in pairs:
        matrix[index[actual]][index[predicted]] += 1
    return metrics, labels, tuple(map(tuple, matrix))


def run_point(job: PointJob) -> PointResult:
    """Run one point end to end; never raises for a failure of the point itself. SIGINT or
    SIGTERM stops its running step's processes and raises PointStopped (no result)."""
    with stopped_by_signals(), \
            tempfile.TemporaryDirectory(prefix=f"textclf-{job.name}-") as tmp:
        clone, rev, ran = Path(tmp) / "repo", "", ()
        try:
            check_out(job, clone)
            remote = configure_remote(job, clone)
            rev = pushed_before(job, clone)
            if rev:
                take_pushed(job, clone, rev, remote)
            else:
                pull_inputs(job, clone, remote)
                rev, ran = run_experiment(job, clone, remote)
            metrics, labels, matrix = read_scores(clone, job.extra_metrics)
        except StepFailed as err:
            return PointResult(job.name, job.overrides, "failed", error=str(err), rev=rev)
        except (OSError, ValueError, KeyError) as err:   # unreadable dvc.yaml or metrics
            return PointResult(job.name, job.overrides, "failed", rev=rev,
                               error=f"{type(err).__name__}: {err}")
    return PointResult(job.name, job.overrides, "success", rev=rev, stages_run=ran,
                       metrics=metrics, labels=labels, confusion=matrix)


def dvc_yaml_of(clone: Path) -> dict:
    """The clone's dvc.yaml, as DVC reads it."""
    return parse_yaml((clone / "dvc.yaml").read_text(encoding="utf-8")) or {}
