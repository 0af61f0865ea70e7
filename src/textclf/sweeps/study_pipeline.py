"""A study as a Kubeflow Pipelines v2 pipeline: K workers at once (`dsl.ParallelFor`), each
taking trials from one shared Optuna storage (textclf.sweeps.study_worker), then a summary
task over what every worker pushed (`dsl.Collected`).

The storage's URL reaches a worker only as an environment variable filled from a Kubernetes
secret (`kubernetes.use_secret_as_env`); the compiled YAML names the secret and its key,
never the URL. Under `kfp.local` (no Kubernetes) the workers inherit the variable from
`textclf kfp run --local`, which sets it to the study's journal file.
"""

from dataclasses import dataclass
from typing import Callable, List

from kfp import dsl, kubernetes
from kfp.dsl import Markdown, Output

from textclf.sweeps.pipeline import DEFAULT_SECRET_KEYS, Resources, request_resources
from textclf.training.trial import STORAGE_ENV

PIPELINE_NAME = "textclf-study"
DEFAULT_STORAGE_KEY = "OPTUNA_STORAGE"


def study_worker(worker: int, study: str, space: str, trials: int, repo_url: str,
                 revision: str, dvc_remote: str, remote_config: list, threads: int) -> str:
    """Run trials of the study until it has its size, push them; the result as JSON."""
    from textclf.sweeps.stop import PointStopped
    from textclf.sweeps.study_worker import WorkerJob, run_worker

    try:
        result = run_worker(WorkerJob(
            repo_url=repo_url, revision=revision, study=study, space=space, trials=trials,
            worker=worker, dvc_remote=dvc_remote, remote_config=tuple(remote_config),
            threads=threads))
    except PointStopped as stop:   # a failed task, without a traceback
        print(f"worker {worker}: {stop}")
        raise SystemExit(1) from None
    print(f"worker {worker}: {result.status}; pushed {', '.join(result.experiments) or 'none'}"
          f"{': ' + result.error if result.error else ''}")
    return result.to_json()


def study_summary(results: List[str], study: str, summary: Output[Markdown]) -> str:
    """Every worker's status and the trials it pushed; also returned."""
    from textclf.sweeps.study_worker import WorkerResult, summary_markdown

    page = summary_markdown(study, [WorkerResult.from_json(r) for r in results])
    with open(summary.path, "w", encoding="utf-8") as out:
        out.write(page)
    return page


@dataclass(frozen=True)
class StudySpec:
    study: str
    space: str                                # path of the space file inside the repository
    trials: int
    workers: int
    repo_url: str
    revision: str
    image: str
    dvc_remote: str = ""
    remote_config: tuple[str, ...] = ()
    threads: int = 0
    resources: Resources = Resources()
    storage_secret: str = ""                  # the secret holding the storage URL
    storage_key: str = DEFAULT_STORAGE_KEY    # its key
    secret: str = ""                          # the DVC remote's credentials, as for a grid
    secret_keys: tuple[str, ...] = DEFAULT_SECRET_KEYS


def build_study_pipeline(spec: StudySpec) -> Callable:
    """The pipeline function; its parameters default to the spec, so it runs as compiled."""
    worker_op = dsl.component(study_worker, base_image=spec.image, install_kfp_package=False)
    summary_op = dsl.component(study_summary, base_image=spec.image,
                               install_kfp_package=False)
    workers = list(range(1, spec.workers + 1))

    @dsl.pipeline(name=PIPELINE_NAME,
                  description=f"Study {spec.study}: {spec.workers} workers sharing one Optuna "
                              f"storage, trials as DVC experiments of {spec.repo_url}")
    def textclf_study(study: str = spec.study, space: str = spec.space,
                      trials: int = spec.trials, repo_url: str = spec.repo_url,
                      revision: str = spec.revision, dvc_remote: str = spec.dvc_remote,
                      remote_config: list = list(spec.remote_config),
                      threads: int = spec.threads) -> Markdown:
        with dsl.ParallelFor(workers, parallelism=spec.workers) as worker:
            task = worker_op(worker=worker, study=study, space=space, trials=trials,
                             repo_url=repo_url, revision=revision, dvc_remote=dvc_remote,
                             remote_config=remote_config, threads=threads)
            task.set_caching_options(False)   # a worker pushes experiments
            request_resources(task, spec.resources)
            env = {}
            if spec.secret:
                env[spec.secret] = {key: key for key in spec.secret_keys}
            if spec.storage_secret:
                env.setdefault(spec.storage_secret, {})[spec.storage_key] = STORAGE_ENV
            for secret, keys in env.items():
                kubernetes.use_secret_as_env(task, secret, keys)
        summary = summary_op(results=dsl.Collected(task.outputs["Output"]), study=study)
        summary.set_caching_options(False)
        return summary.outputs["summary"]

    return textclf_study
