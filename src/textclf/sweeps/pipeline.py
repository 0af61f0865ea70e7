"""The sweep as a Kubeflow Pipelines v2 pipeline: one task per grid point (`dsl.ParallelFor`),
then a leaderboard task over every point's result (`dsl.Collected`).

Both components are lightweight Python components that import `textclf` from the image
(the Dockerfile) or, under `kfp.local`, from this environment: nothing is pip-installed
when a task starts. Their bodies only adapt KFP types to `textclf.sweeps.point` and
`textclf.sweeps.results`, which hold the logic and are tested without KFP.
"""

from dataclasses import dataclass
from typing import Callable, List

from kfp import dsl, kubernetes
from kfp.dsl import ClassificationMetrics, Markdown, Metrics, Output

from textclf.sweeps.grid import GridPoint

PIPELINE_NAME = "textclf-sweep"
# AWS-style keys, read by dvc-s3 (and by most S3-compatible servers' clients).
DEFAULT_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def sweep_point(point: dict, sweep_name: str, repo_url: str, revision: str, dvc_remote: str,
                remote_config: list, threads: int, extra_metrics: list,
                metrics: Output[Metrics],
                confusion: Output[ClassificationMetrics]) -> str:
    """Run one grid point as a DVC experiment and push it; its result as JSON."""
    from textclf.sweeps.point import PointJob, run_point
    from textclf.sweeps.stop import PointStopped

    name = f"{sweep_name}-{point['number']}"
    try:
        result = run_point(PointJob(
            repo_url=repo_url, revision=revision, name=name,
            overrides=tuple(point["overrides"]), dvc_remote=dvc_remote,
            remote_config=tuple(remote_config), threads=threads,
            extra_metrics=tuple(extra_metrics)))
    except PointStopped as stop:   # a failed task, without a traceback
        print(f"{name}: {stop}")
        raise SystemExit(1) from None
    for key, value in result.metrics.items():
        metrics.log_metric(key, value)
    if result.confusion:
        confusion.log_confusion_matrix(list(result.labels), [list(r) for r in result.confusion])
    ran = f" (ran {', '.join(result.stages_run) or 'no stage'})" if result.ok else ""
    print(f"{result.name}: {result.status}{ran}{': ' + result.error if result.error else ''}")
    return result.to_json()


def sweep_leaderboard(results: List[str], sort_by: str, ascending: bool,
                      leaderboard: Output[Markdown]) -> str:
    """Every point, best first by `sort_by`, failed points with their error; also returned."""
    from textclf.sweeps.results import PointResult, leaderboard_markdown

    page = leaderboard_markdown([PointResult.from_json(r) for r in results], sort_by, ascending)
    with open(leaderboard.path, "w", encoding="utf-8") as out:
        out.write(page)
    return page


@dataclass(frozen=True)
class Resources:
    """Per-point Kubernetes requests; empty values are left to the cluster's defaults."""
    cpu: str = ""              # e.g. "4" or "500m"
    memory: str = ""           # e.g. "8Gi"
    gpu_type: str = ""         # e.g. "nvidia.com/gpu"
    gpus: int = 0


@dataclass(frozen=True)
class SweepSpec:
    points: tuple[GridPoint, ...]
    sweep_name: str
    repo_url: str
    revision: str
    image: str
    parallelism: int = 2
    dvc_remote: str = ""
    remote_config: tuple[str, ...] = ()
    threads: int = 0
    extra_metrics: tuple[str, ...] = ()
    resources: Resources = Resources()
    secret: str = ""                          # Kubernetes secret whose keys become env vars
    secret_keys: tuple[str, ...] = DEFAULT_SECRET_KEYS
    sort_by: str = "f1_macro"
    ascending: bool = False


def request_resources(task: dsl.PipelineTask, resources: Resources) -> None:
    if resources.cpu:
        task.set_cpu_request(resources.cpu)
    if resources.memory:
        task.set_memory_request(resources.memory)
    if resources.gpus or resources.gpu_type:
        task.set_accelerator_type(resources.gpu_type or "nvidia.com/gpu")
        task.set_accelerator_limit(max(resources.gpus, 1))


def build_pipeline(spec: SweepSpec) -> Callable:
    """The pipeline function; its parameters default to the spec, so it runs as compiled."""
    point_op = dsl.component(sweep_point, base_image=spec.image, install_kfp_package=False)
    board_op = dsl.component(sweep_leaderboard, base_image=spec.image,
                             install_kfp_package=False)
    items = [point.as_item() for point in spec.points]

    @dsl.pipeline(name=PIPELINE_NAME,
                  description=f"{len(items)} DVC experiments of {spec.repo_url} "
                              "and their leaderboard")
    def textclf_sweep(sweep_name: str = spec.sweep_name, repo_url: str = spec.repo_url,
                      revision: str = spec.revision, dvc_remote: str = spec.dvc_remote,
                      remote_config: list = list(spec.remote_config),
                      threads: int = spec.threads,
                      extra_metrics: list = list(spec.extra_metrics),
                      sort_by: str = spec.sort_by, ascending: bool = spec.ascending) -> Markdown:
        with dsl.ParallelFor(items, parallelism=spec.parallelism) as point:
            task = point_op(point=point, sweep_name=sweep_name, repo_url=repo_url,
                            revision=revision, dvc_remote=dvc_remote,
                            remote_config=remote_config, threads=threads,
                            extra_metrics=extra_metrics)
            # A point pushes an experiment: a cached result would push nothing.
            task.set_caching_options(False)
            request_resources(task, spec.resources)
            if spec.secret:
                kubernetes.use_secret_as_env(task, spec.secret,
                                             {key: key for key in spec.secret_keys})
        board = board_op(results=dsl.Collected(task.outputs["Output"]), sort_by=sort_by,
                         ascending=ascending)
        board.set_caching_options(False)
        return board.outputs["leaderboard"]

    return textclf_sweep
