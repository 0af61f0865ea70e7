"""Command `kfp`: a sweep of DVC experiments on Kubeflow Pipelines.

    textclf kfp compile -o sweep.yaml --image REGISTRY/textclf:TAG -S 'train.batch_size=16,32'
    textclf kfp run --local -S 'train.batch_size=16,32' -S 'data.class_ratio=[1,1,1],[2,1,1]'

    textclf kfp compile --tune tune.yaml -n lr --parallelism 4 --storage-secret optuna ...
    textclf kfp run --local --tune tune.yaml -n lr --parallelism 2

`-S` is `dvc exp run -S`: each sweeps one key, the points are the product (at most
--max-points). Every point is `dvc exp run -n <name>-<i>` in a clone of the revision, pushed
back with `dvc exp push`, so `dvc exp pull origin` + `dvc exp show` list the sweep beside
local runs. Ctrl-C or SIGTERM stops `run --local` and every process it started; the same
command again (same -n and -S) resumes a stopped or killed sweep: points already pushed
are listed, not run again (docs/durability.md).

`--tune SPACE` runs a study instead (`textclf tune`, docs/tuning.md): --parallelism workers,
each in its own clone, take trials NAME-0, NAME-1, ... from one shared Optuna storage and
push them as the points do. On a cluster the storage is a database whose URL comes from a
Kubernetes secret (--storage-secret), never from the YAML; locally a journal file.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from textclf.cores import threads_each
from textclf.errors import UserError, exits_on_user_error
from textclf.flags import integer, positive_int
from textclf.params import parse_yaml
from textclf.sweeps.grid import DEFAULT_MAX_POINTS, check_keys, check_sweep_name, \
    committed_text, grid_points
from textclf.sweeps.remote_settings import check_remote_settings, check_url
from textclf.sweeps.scratch import scratch_for_tasks
from textclf.sweeps.stop import stopped_cleanly

# kfp.local's SubprocessRunner runs at most this many ParallelFor iterations at once.
LOCAL_MAX_PARALLEL = 2
# dvclive's summary of the train stage (last and best epoch): a plain file, not a DVC metric.
TRAIN_SUMMARY = "metrics/train/metrics.json"


def _git(args: list[str], cwd: Path) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"`git {' '.join(args)}` failed in {cwd}: {result.stderr.strip()}")
    return result.stdout.strip()


def head_of(repo_url: str, cwd: Path) -> str:
    """The commit HEAD names in a repository (a path or URL), as `git ls-remote` sees it."""
    head = _git(["ls-remote", repo_url, "HEAD"], cwd).split()
    if not head:
        raise UserError(f"--repo {repo_url}: it has no HEAD commit; pass --rev")
    return head[0]


def local_remote_url(repo: Path) -> str:
    """This clone's default DVC remote as an absolute url (DVC resolves relative paths)."""
    def dvc(*args: str) -> str:
        result = subprocess.run(["dvc", *args], cwd=repo, capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else ""
    name = dvc("remote", "default")
    url = dvc("config", f"remote.{name}.url") if name else ""
    if not url:
        raise UserError(f"{repo}: no default DVC remote; pass --remote URL (a folder or s3://)")
    return url


def local_threads(parallelism: int, points: int) -> int:
    """OMP_NUM_THREADS per point: the cores shared by the points that run at once."""
    at_once = max(1, min(parallelism, LOCAL_MAX_PARALLEL, points))
    return threads_each(at_once)


CPU = re.compile(r"([0-9]*[.])?[0-9]+m?")       # the CPU requests KFP's compiler reads
MEMORY = re.compile(r"[0-9]+([EPTGMK]i?)?")   # the quantities KFP's compiler reads


def memory_quantity(value: str) -> str:
    """--memory as Kubernetes writes it (8Gi, 500M, 2G), checked before compiling."""
    if value and not MEMORY.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"{value!r}: expected a memory quantity as KFP reads it: a whole number, "
            f"alone or followed by one of E, P, T, G, M, K or Ei, Pi, Ti, Gi, Mi, Ki "
            f"(e.g. 8Gi)")
    return value


def pod_threads(cpu: str) -> int:
    """OMP_NUM_THREADS in a pod: its CPU request ("4", "2.5", "500m"); 0 = leave unset."""
    if not cpu:
        return 0
    # The form KFP's compiler accepts, more than none: nan, inf, -1 or 1e3 failed there.
    if not CPU.fullmatch(cpu):
        cores = 0.0
    elif cpu.endswith("m"):
        cores = float(cpu[:-1]) / 1000
    else:
        cores = float(cpu)
    if cores <= 0:
        raise UserError(f"--cpu {cpu!r}: expected cores as Kubernetes writes them, "
                        "more than 0, e.g. 4, 2.5 or 500m")
    return max(1, int(cores))


def params_reader(cwd: Path, revision: str) -> Callable[[str], Any]:
    """Reads a params file as the swept revision has it, or else as this folder has it, the
    way DVC reads it (YAML 1.2); None for a file in a format not checked (TOML, Python)."""
    from ruamel.yaml import YAMLError

    read: dict[str, Any] = {}

    def content(path: str) -> Any:
        if path in read:
            return read[path]
        if Path(path).suffix.lower() not in (".yaml", ".yml", ".json"):
            return None
        text = committed_text(cwd, revision, path)
        if text is None and (cwd / path).is_file():
            text = (cwd / path).read_text(encoding="utf-8")
        if text is None:
            raise UserError(f"-S: cannot check the swept keys: {path} is neither in commit "
                            f"{revision[:12]} as this clone knows it nor in {cwd}; run "
                            "from the project's clone (`git fetch` the commit first)")
        try:
            read[path] = parse_yaml(text)
        except YAMLError as err:
            raise UserError(f"-S: {path} of {revision[:12]} is not valid YAML: {err}") from None
        return read[path]

    return content


def add_sweep_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-S", "--set-param", dest="sets", action="append", default=[],
                        metavar="[FILE:]KEY=VALUES",
                        help="as in `dvc exp run -S`: one key, values separated by commas")
    parser.add_argument("--repo", help="git URL or path to clone; experiments are pushed back "
                                       "to it (run --local: this repository)")
    parser.add_argument("--rev", help="commit to start from (default: the repository's HEAD)")
    parser.add_argument("--remote", default=None, help="DVC remote url (folder or s3://...)")
    parser.add_argument("--remote-config", action="append", default=[], metavar="KEY=VALUE",
                        help="per-user DVC remote setting, e.g. endpointurl=http://...")
    parser.add_argument("--parallelism", type=positive_int, default=2,
                        help="points running at once (default: %(default)s)")
    parser.add_argument("--max-points", type=positive_int, default=DEFAULT_MAX_POINTS,
                        help="refuse a grid of more points than this "
                             f"(default {DEFAULT_MAX_POINTS}; a typo can make a million)")
    parser.add_argument("-n", "--name", default=time.strftime("kfp-%Y%m%d-%H%M%S", time.gmtime()),
                        help="experiments are named NAME-1, NAME-2, ... (a study's trials "
                             "with --tune: NAME-0, NAME-1, ...); default: kfp-<UTC time>")
    parser.add_argument("--metrics-file", action="append", default=None, metavar="PATH",
                        help="scores to report besides dvc.yaml's metrics "
                             "(default: train's dvclive summary, metrics/train/metrics.json)")
    parser.add_argument("--tune", metavar="SPACE",
                        help="a study instead of a grid: `textclf tune`'s space file, committed; "
                             "--parallelism workers share it (docs/tuning.md)")
    parser.add_argument("--trials", type=positive_int,
                        help="with --tune: the study's size (default: the space file's)")
    parser.add_argument("--sort-by", default="f1_macro", help="leaderboard metric")
    parser.add_argument("--ascending", action="store_true", help="lower is better")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="textclf kfp", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    compile_ = commands.add_parser("compile", help="write the KFP v2 pipeline YAML")
    add_sweep_args(compile_)
    compile_.add_argument("-o", "--output", default="sweep.yaml",
                          help="where to write the compiled pipeline (default: sweep.yaml)")
    compile_.add_argument("--image", required=True, help="component image (see Dockerfile)")
    compile_.add_argument("--cpu", default="", help="CPU request per point, e.g. 4 or 500m")
    compile_.add_argument("--memory", default="", type=memory_quantity,
                          help="memory request per point, e.g. 8Gi")
    compile_.add_argument("--gpu-type", default="", help="accelerator, e.g. nvidia.com/gpu")
    compile_.add_argument("--gpus", type=integer(0, 64), default=0, help="accelerators per point")
    compile_.add_argument("--secret", default="", help="Kubernetes secret with the remote's "
                                                        "credentials, as env vars in each point")
    compile_.add_argument("--secret-key", action="append", default=[], metavar="KEY",
                          help="secret keys to expose (default: AWS_ACCESS_KEY_ID, "
                               "AWS_SECRET_ACCESS_KEY); each becomes an env var of that name")
    compile_.add_argument("--storage-secret", default="",
                          help="with --tune: the Kubernetes secret holding the study's "
                               "database URL (shared by the workers)")
    compile_.add_argument("--storage-key", default="OPTUNA_STORAGE",
                          help="its key (default: OPTUNA_STORAGE)")
    run = commands.add_parser("run", help="run the pipeline on this machine (kfp.local)")
    add_sweep_args(run)
    run.add_argument("--local", action="store_true", required=True,
                     help="through kfp.local (a cluster: compile, then upload the YAML)")
    run.add_argument("--pipeline-root", help="where KFP keeps task outputs (default: a temp dir)")
    run.add_argument("--leaderboard", help="also write the leaderboard Markdown here")
    run.add_argument("--storage", help="with --tune: the study's Optuna storage "
                                       "(default: .tune/NAME.journal)")
    return parser


def _spec(args: argparse.Namespace, repo_url: str, revision: str, remote: str, threads: int,
          image: str, **cluster):
    from textclf.sweeps.pipeline import SweepSpec

    points = tuple(grid_points(args.sets, args.max_points))
    check_keys(args.sets, params_reader(Path.cwd(), revision))
    return SweepSpec(points=points, sweep_name=check_sweep_name(args.name),
                     repo_url=check_url("--repo", repo_url), revision=revision, image=image,
                     parallelism=args.parallelism, dvc_remote=check_url("--remote", remote),
                     remote_config=check_remote_settings(args.remote_config), threads=threads,
                     extra_metrics=tuple(args.metrics_file or [TRAIN_SUMMARY]),
                     sort_by=args.sort_by, ascending=args.ascending, **cluster)


def _study_fields(args: argparse.Namespace, repo_url: str, revision: str,
                  remote: str) -> dict[str, Any]:
    """What a study pipeline needs from the flags, checked as `textclf tune` checks them."""
    from textclf.sweeps.search_space import read_config

    if args.sets:
        raise UserError("--tune: a study searches its space file; -S is for a grid: "
                        "give one or the other")
    config = read_config(args.tune)          # errors name the file and the key
    # The workers run from their clone's root: the path inside the repository.
    root = Path(_git(["rev-parse", "--show-toplevel"], Path.cwd()))
    try:
        space = Path(args.tune).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        raise UserError(f"--tune {args.tune}: outside the repository ({root}); the workers "
                        f"clone it, so the space file must be committed in it") from None
    shown = subprocess.run(["git", "cat-file", "-e", f"{revision}:{space}"],
                           cwd=Path.cwd(), capture_output=True)
    if shown.returncode != 0:
        raise UserError(f"--tune {args.tune}: not in commit {revision[:12]}; the workers "
                        "clone the commit, so commit the space file (and push it)")
    trials = args.trials or config.trials or config.grid_size
    if trials is None:
        raise UserError(f"{args.tune}: no study size: give `trials:` there or --trials")
    return dict(study=check_sweep_name(args.name), space=space, trials=trials,
                workers=args.parallelism, repo_url=check_url("--repo", repo_url),
                revision=revision, dvc_remote=check_url("--remote", remote),
                remote_config=check_remote_settings(args.remote_config))


def compile_sweep(args: argparse.Namespace) -> None:
    from kfp import compiler

    from textclf.sweeps.pipeline import DEFAULT_SECRET_KEYS, Resources, build_pipeline
    from textclf.sweeps.study_pipeline import StudySpec, build_study_pipeline

    try:
        repo_url = args.repo or _git(["remote", "get-url", "origin"], Path.cwd())
    except UserError as err:
        raise UserError(f"--repo: give the git URL the cluster clones; the default, this "
                        f"clone's remote 'origin', is not there ({err})") from None
    if local_path(repo_url):
        given = "" if args.repo else " (the default: this clone's remote 'origin')"
        raise UserError(f"--repo {repo_url}: a folder on this machine{given}, which a "
                        f"cluster cannot clone; give the git URL the cluster clones, e.g. "
                        f"https://github.com/team/textclf.git")
    # this clone's commit: push it to --repo first (docs/kubernetes.md)
    revision = args.rev or _git(["rev-parse", "HEAD"], Path.cwd())
    resources = Resources(cpu=args.cpu, memory=args.memory, gpu_type=args.gpu_type,
                          gpus=args.gpus)
    secrets = dict(secret=args.secret, secret_keys=tuple(args.secret_key) or DEFAULT_SECRET_KEYS)
    if args.tune:
        if not args.storage_secret:
            raise UserError("--tune on a cluster needs --storage-secret NAME: a Kubernetes "
                            f"secret whose key {args.storage_key} (--storage-key) holds the "
                            "database URL the workers share (e.g. postgresql://...); the URL "
                            "never goes into the pipeline YAML")
        study = StudySpec(**_study_fields(args, repo_url, revision, args.remote or ""),
                          image=args.image, threads=pod_threads(args.cpu), resources=resources,
                          storage_secret=args.storage_secret, storage_key=args.storage_key,
                          **secrets)
        pipeline, what = build_study_pipeline(study), (
            f"study {study.study}: {study.trials} trials, {study.workers} workers of "
            f"{study.repo_url}@{study.revision[:12]}, experiments {study.study}-0...")
    else:
        spec = _spec(args, repo_url, revision, args.remote or "", pod_threads(args.cpu),
                     args.image, resources=resources, **secrets)
        pipeline, what = build_pipeline(spec), (
            f"{len(spec.points)} points of {spec.repo_url}@{spec.revision[:12]}, at most "
            f"{spec.parallelism} at once, experiments {spec.sweep_name}-1...")
    try:
        compiler.Compiler().compile(pipeline, args.output)
    except ValueError as err:   # e.g. a CPU or memory request KFP cannot read
        raise UserError(f"compile: {err}") from None
    print(f"{args.output}: {what}")


def local_path(url: str) -> bool:
    """Whether a git URL is a folder here: a path or file://, not scheme://... or scp-like
    [user@]host:path (git's rule: a colon before any slash; C: is a drive)."""
    if "://" in url:
        return url.lower().startswith("file://")
    colon, slash = url.find(":"), url.find("/")
    return not (colon > 1 and (slash == -1 or colon < slash))


def _local_storage(spec: str) -> str:
    """An absolute journal or SQLite path (the workers run in clones elsewhere), or a URL."""
    if "://" in spec:
        return spec
    path = Path(spec).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(path)


def run_local(args: argparse.Namespace) -> None:
    from kfp import local

    from textclf.sweeps.pipeline import build_pipeline
    from textclf.sweeps.study_pipeline import StudySpec, build_study_pipeline
    from textclf.training.trial import STORAGE_ENV

    here = Path(_git(["rev-parse", "--show-toplevel"], Path.cwd())) if not args.repo else None
    repo_url = args.repo or str(here)
    if here and _git(["status", "--porcelain", "--untracked-files=no"], here):
        print("note: uncommitted changes are not part of the sweep; it runs the last commit",
              file=sys.stderr)
    remote = args.remote or local_remote_url(here or Path.cwd())
    if "://" not in remote:
        remote = str(Path(remote).resolve())   # each point works in its own temp clone
    image = f"python:{sys.version_info.major}.{sys.version_info.minor}"  # this environment
    revision = args.rev or (_git(["rev-parse", "HEAD"], here) if here else
                            head_of(repo_url, Path.cwd()))
    if args.tune:
        study = StudySpec(**_study_fields(args, repo_url, revision, remote), image=image,
                          threads=local_threads(args.parallelism, args.parallelism))
        # kfp.local runs the workers as child processes: they inherit the storage from here.
        os.environ[STORAGE_ENV] = _local_storage(args.storage or f".tune/{study.study}.journal")
        pipeline, names = build_study_pipeline(study), [
            f"{study.study} (worker {i})" for i in range(1, study.workers + 1)]
    else:
        spec = _spec(args, repo_url, revision, remote, 0, image)
        spec = dataclasses.replace(spec,
                                   threads=local_threads(args.parallelism, len(spec.points)))
        pipeline, names = build_pipeline(spec), [point.name(spec.sweep_name)
                                                 for point in spec.points]
    root = args.pipeline_root or tempfile.mkdtemp(prefix="textclf-kfp-")
    try:
        with scratch_for_tasks() as scratch:
            local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=root,
                       workspace_root=str(scratch / "workspace"))
            # on a stop the command ends at once (os._exit): the scratch goes first
            with stopped_cleanly(names, Path(root),
                                 cleanup=lambda: shutil.rmtree(scratch, ignore_errors=True)):
                task = pipeline()
    except RuntimeError as err:   # kfp.local: a task failed outside a point's own error handling
        raise UserError(f"the local pipeline failed: {err} (task outputs in {root})") from None
    page = Path(task.output.path).read_text(encoding="utf-8")
    if args.leaderboard:
        from textclf.outputs import atomic_file

        with atomic_file(args.leaderboard) as scratch:
            scratch.write_text(page, encoding="utf-8")
    print(f"\n{page}\nexperiments pushed to {repo_url}; task outputs in {root}")
    if args.tune:
        study_report(args.tune, study.study, os.environ[STORAGE_ENV])


def study_report(space: str, name: str, storage: str) -> None:
    """The study's report, as `textclf tune` writes it (reports/tune-NAME.html and .md)."""
    from textclf.sweeps.search_space import read_config
    from textclf.sweeps.study_report import write_study_report
    from textclf.training.trial import import_optuna, open_storage

    study = import_optuna().load_study(study_name=name, storage=open_storage(storage))
    write_study_report(study, read_config(space), "params.yaml", f"reports/tune-{name}.html",
                       f"reports/tune-{name}.md")


@exits_on_user_error
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        import kfp  # noqa: F401
    except ImportError:
        raise UserError('textclf kfp needs the kfp extra: pip install -e ".[kfp]"') from None
    (compile_sweep if args.command == "compile" else run_local)(args)


if __name__ == "__main__":
    main()
