"""Command `serve`: a model folder behind HTTP, speaking the Open Inference Protocol.

    pip install -e ".[serve]"
    textclf serve --model models/classifier --port 8080
    curl -s localhost:8080/predict -H 'content-type: application/json' \\
        -d '{"texts": ["great value", "never again"]}'

Endpoints (Open Inference Protocol / KServe v2, plus one plain one):

    GET  /v2/health/live, /v2/health/ready        {"live": true}, {"ready": true}
    GET  /v2/models/{name}, /v2/models/{name}/ready   metadata; readiness
    POST /v2/models/{name}/infer   texts as one BYTES input of shape [N]; outputs label,
                                   probability, probabilities [N, C], classes [C]
                                   (see textclf.serving.protocol)
    POST /predict  {"texts": [...], "id"?} -> {"predictions": [{"label", "probability",
                                   "probabilities": {label: p}}, ...], ...}
    POST /feedback {"request_id", "index", "label"} or a list of them -> {"accepted": n}:
                                   the true label of an answered text, appended to
                                   <log-dir>/feedback/ (see textclf.serving.feedback)
    POST /v2/repository/models/{name}/load   read the model folder again and answer with
                                   it, no downtime; SIGHUP too (textclf.serving.repository)
    GET  /metrics                  Prometheus metrics (textclf.serving.metrics)
    GET  /openapi.json             only with --openapi; /docs is never served (it loads a CDN)

`{name}` is `--model-name` (default: the model folder's name). Answers are those of
`textclf predict` (label of the highest probability, probabilities rounded to 6 digits,
calibrated with the temperature `train` fitted unless `--raw-probabilities`), with the
same precision choice; a text batched with other requests' texts can differ from
`predict` in the 7th digit in fp32 (the matrix kernels block differently by batch size).
With int8 (`--precision int8`, or what `auto` picks on a CPU where bf16 does not pay,
int8 measures faster than fp32 and, for this model, gives fp32's labels on 99.5% of its
validation split: textclf.model.int8_agreement) answers come from ONNX Runtime with int8
weights (textclf.model.engines.onnx_int8), as `predict`'s do. They are not fp32's: the
demo model's forced int8 labels differed from fp32's for 3% of its validation texts and
7% of SST-5 dev sentences, probabilities by up to 0.25 and 0.31 (benchmarks/README.md),
which is why `auto` keeps that model on fp32; and activations are scaled per batch, so a
text's probabilities also move with the texts batched beside it (`--precision fp32` keeps
them to the 7th digit).
Every answer carries `model_version`: `sha256:<one sha256 over the weight files>`, plus
`+git:<commit>` when the model folder is inside a git repository (`git rev-parse HEAD`
there; it names the code and dvc.lock revision, not uncommitted changes), or
`--model-version` verbatim.

Refusals are JSON `{"error": "..."}` naming the field: 400 malformed JSON; 422 a wrong or
missing protocol field, a non-string, a text with nothing visible (empty, whitespace or
invisible characters only, as `predict` refuses them), an `id` over 256 characters; 413
more than `--max-texts` texts, a body over `--max-body-mb` (refused before it is read
whole), or a text longer than `--max-chars` characters when `--on-long-text reject` (the
default, `truncate`, classifies its first `--max-chars` characters: the model reads only
its first max_length tokens anyway); 408 a body slower than `--request-timeout`; 404 an
unknown model name or path. A refused request never reaches the batch, so it cannot
disturb others. Connections that send nothing within `--request-timeout` are closed, and
at most `--max-connections` are open (textclf.serving.connections).

Concurrent requests are batched: see textclf.serving.batcher (`--max-batch-size`,
`--max-wait-ms`; `--max-batch-size 1` turns batching off). Every request is logged to
`--log-dir` (JSON Lines, one file per UTC day; schema in textclf.serving.log) unless
`--no-log`. SIGTERM (what Kubernetes sends) stops accepting connections, lets requests
in flight finish (up to `--grace-seconds`), then exits.

Why FastAPI on uvicorn: both are widely used and actively maintained; ASGI serves many
waiting clients from one event loop while one thread computes; pydantic validates the
protocol messages and names the wrong field; and it is the stack of KServe's own Python
model server (kserve/protocol/rest/server.py builds a FastAPI app and runs it on uvicorn),
so the protocol layer is the one KServe users already run.

Threads: one worker thread runs the model with `--threads` intra-op threads (default:
$OMP_NUM_THREADS if set, else one less than the cores this process may use, at least 1).
The spare core is the event loop's: HTTP parsing, JSON and the log run there while the
model computes, and idle OpenMP threads (which spin before sleeping) do not compete with
it. On 2 cores, batched throughput measured the same with 1 model thread as with 2 and
held up better with other work on the machine (benchmarks/serve_load.py); a lone client's
latency is lower with 2 (`--threads 2`).

Worker processes: `--workers N` runs N whole servers (model, batcher, event loop) behind
the one port, each with `--threads` model threads (default there: the cores divided by
N, at least 1), as uvicorn's multiprocess supervisor runs them; they share the log folder,
the metrics and model reloads (textclf.serving.workers). `--max-connections` and
`--feedback-window` hold per worker.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Optional

from textclf.cores import available_cores, threads_asked
from textclf.errors import UserError, exits_on_user_error
from textclf.flags import integer, number
from textclf.params import PRECISIONS
from textclf.serving.batcher import MAX_WAIT_MS

RESERVED_DESCRIPTORS = 64   # model files, logs, the listening socket, stdio, epoll


def default_max_connections() -> int:
    """1,000, or fewer where `ulimit -n` leaves less room beside RESERVED_DESCRIPTORS."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1000
    return max(1, min(1000, soft - RESERVED_DESCRIPTORS))


def default_threads(workers: int = 1) -> int:
    """OMP_NUM_THREADS when set, else one less than the cores this process may use (at
    least 1): the event loop keeps a core for HTTP, JSON and the log. With several worker
    processes, each takes its share of the cores (at least 1)."""
    if (threads := threads_asked()) is not None:
        return max(threads, 1)
    cores = available_cores()
    return max(cores - 1 if workers == 1 else cores // workers, 1)


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="textclf serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--model", default="models/classifier", help="model folder (default: %(default)s)")
    add("--host", default="127.0.0.1",
        help="address to bind (default: %(default)s; 0.0.0.0 in a container)")
    add("--port", type=integer(0, 65535), default=8080, help="port to listen on (default: 8080)")
    add("--model-name", help="name in /v2/models/{name} (default: the folder's name)")
    add("--model-version", help="version string to report instead of the computed one")
    add("--max-batch-size", type=integer(1, 4096), default=64,
        help="texts gathered into one batch (default: predict's --batch-size); 1 turns "
             "batching off")
    add("--pass-size", type=integer(1, 4096),
        help="texts per forward pass: a batch is sorted by length and run in passes of "
             "this many, so short texts are not padded to the batch's longest (default: 16 "
             "on a CPU, --max-batch-size on a GPU)")
    add("--max-wait-ms", type=number(0, MAX_WAIT_MS), default=5.0,
        help=f"how long a text waits for others to share its batch (0 to {MAX_WAIT_MS}; "
             f"default: %(default)g)")
    add("--max-texts", type=integer(1, 100_000), default=256,
        help="texts per request (more: 413; default: %(default)s)")
    add("--max-chars", type=integer(1, 10_000_000), default=10_000,
        help="characters per text (default: %(default)s; see --on-long-text)")
    add("--max-body-mb", type=number(0, 1024, above_low=True), default=16.0,
        help="request body size over which a request is refused with 413, before it is "
             "read whole (default 16: --max-texts 256 texts of 10,000 characters fit)")
    add("--request-timeout", type=number(0, 3600, above_low=True), default=30.0,
        help="seconds a connection may take to send a request's headers (from opening, "
             "or from its last answer), and its body: slower ones are closed (408; "
             "default: %(default)g)")
    add("--max-connections", type=integer(1, 1_000_000), default=default_max_connections(),
        help="open client connections; one more is answered 503 and closed (default: "
             "1,000, or fewer where `ulimit -n` is lower)")
    add("--on-long-text", choices=["truncate", "reject"], default="truncate",
        help="a text over --max-chars: classify its start, or refuse with 413 (default: "
             "%(default)s)")
    add("--log-dir", default="logs/predictions",
        help="prediction log folder (default: %(default)s)")
    add("--log-max-mb", type=number(0, 1_000_000, above_low=True), default=100.0,
        help="size at which a day's log rolls over (default: %(default)g)")
    add("--no-log", action="store_true",
        help="do not log predictions (POST /feedback then answers 409)")
    add("--feedback-window", type=integer(1, 100_000_000), default=100_000,
        help="how many of the last logged requests POST /feedback accepts labels for "
             "(read back from the log at start; about 200 bytes each; default: "
             "%(default)s)")
    add("--precision", choices=PRECISIONS, default="auto",
        help="auto: the fastest this machine runs well, as predict chooses (bf16 where it "
             "pays, else int8 where measured faster than fp32 and giving fp32's labels on "
             "99.5%% of the model's validation split); int8: ONNX Runtime with int8 "
             "weights, unchecked (probabilities measured up to 0.3 from fp32's)")
    add("--raw-probabilities", action="store_true",
        help="answer with the model's own probabilities, not the calibrated ones (the "
             "temperature `train` fitted on the validation split; labels are the same)")
    add("--threads", type=integer(1, 1024),
        help="intra-op threads for the model, per worker (default: $OMP_NUM_THREADS, else "
             "cores - 1 with one worker, cores / --workers with several, at least 1)")
    add("--workers", type=integer(1, 4 * available_cores()), default=1,
        help="server processes behind the one port, each with its own model and batcher "
             "(default 1; at most 4 per core)")
    add("--grace-seconds", type=integer(1, 3600), default=30,
        help="on SIGTERM, how long requests in flight may take to finish (default: "
             "%(default)s)")
    add("--access-log", action="store_true", help="log every HTTP request to stderr")
    add("--http", choices=["auto", "h11", "httptools"], default="auto",
        help="HTTP parser: httptools (C, the faster) when installed, else h11 (pure Python)")
    add("--loop", choices=["auto", "asyncio", "uvloop"], default="auto",
        help="event loop: uvloop when installed, else asyncio")
    add("--openapi", action="store_true",
        help="serve the OpenAPI schema at /openapi.json (off by default; /docs is never "
             "served: its page loads JavaScript from a CDN)")
    args = parser.parse_args(argv)
    for flag, module in (("--http", args.http), ("--loop", args.loop)):
        if module != "auto" and importlib.util.find_spec(module) is None:
            parser.error(f"{flag} {module}: {module} is not installed (pip install "
                         f"{module}); or leave {flag} auto, which uses it when it is")
    args.threads = args.threads or default_threads(args.workers)
    return args


# On 2 CPU cores, batches labelled in length-sorted passes of 16 served 1.33x the requests
# of one pass padded to the longest text, at 32 clients (benchmarks/README.md, "Serving");
# a GPU is fed best by one large pass.
CPU_PASS_SIZE = 16


def pass_size(args: argparse.Namespace) -> int:
    """--pass-size, else 16 on a CPU and the whole batch on a GPU."""
    if args.pass_size:
        return min(args.pass_size, args.max_batch_size)
    from textclf.model.precision import choose_device

    gpu = choose_device().type == "cuda"
    return args.max_batch_size if gpu else min(CPU_PASS_SIZE, args.max_batch_size)


def check_log_dir(args: argparse.Namespace) -> None:
    """A log folder the server cannot write is found at start-up, not at the first
    request (UserError)."""
    from textclf.serving.log import check_writable

    if args.no_log:
        return
    try:
        check_writable(Path(args.log_dir))
    except OSError as err:
        raise UserError(f"--log-dir {args.log_dir}: cannot write there ({err.strerror or err}); "
                        f"expected a folder this user may write, or --no-log") from None


def build_app(args: argparse.Namespace, group=None):
    """Load the model and wire the app: (app, ConnectionGuard). `group`: the
    WorkerGroup of a worker process (textclf.serving.workers), else None."""
    import torch

    from textclf.serving.app import HttpSettings, create_app
    from textclf.serving.batcher import BatchSettings, DynamicBatcher
    from textclf.serving.connections import ConnectionGuard
    from textclf.serving.feedback import FeedbackLog
    from textclf.serving.log import PredictionLog
    from textclf.serving.metrics import ServeMetrics
    from textclf.serving.protocol import Limits
    from textclf.serving.repository import ModelRepository, ModelSource, load_model

    log_dir = Path(args.log_dir)
    check_log_dir(args)
    torch.set_num_threads(args.threads)
    folder = Path(args.model)
    source = ModelSource(folder=folder, name=args.model_name or folder.resolve().name,
                         precision=args.precision, batch_size=pass_size(args),
                         threads=args.threads, calibrated=not args.raw_probabilities,
                         version=args.model_version)
    loaded = load_model(source)
    metrics = ServeMetrics(group.metrics if group is not None else None)
    batcher = DynamicBatcher(loaded, BatchSettings(args.max_batch_size, args.max_wait_ms),
                             on_batch=metrics.on_batch)
    repository = ModelRepository(source, loaded, batcher, metrics)
    limits = Limits(args.max_texts, args.max_chars, args.on_long_text)
    max_bytes = int(args.log_max_mb * 2**20)
    prediction_log = None if args.no_log else PredictionLog(log_dir, max_bytes)
    answered = None if args.no_log else answered_requests(log_dir, args.feedback_window)
    feedback_log = None if args.no_log else FeedbackLog(log_dir, max_bytes)
    guard = ConnectionGuard(args.max_connections, args.request_timeout)
    http = HttpSettings(int(args.max_body_mb * 2**20), args.request_timeout, args.openapi)
    logging = "off" if answered is None else (
        f"{args.log_dir} (labels accepted for {len(answered):,} requests logged before)")
    served = loaded.served
    worker = f"worker {os.getpid()}: " if group is not None else ""
    print(f"serve: {worker}model {served.name!r} ({served.version}), {len(served.labels)} "
          f"labels, {loaded.precision}, {args.threads} threads; prediction log: {logging}",
          file=sys.stderr, flush=True)
    app = create_app(repository, batcher, limits, prediction_log, feedback_log, answered,
                     metrics, http, guard, group)
    return app, guard


def uvicorn_config(app, guard, args: argparse.Namespace, log_level: str = "info"):
    """The uvicorn settings: uvicorn's HTTP protocol inside the connection guard."""
    import uvicorn

    return uvicorn.Config(app, host=args.host, port=args.port, access_log=args.access_log,
                          timeout_graceful_shutdown=args.grace_seconds, log_level=log_level,
                          http=guarded_protocol(guard, args), loop=args.loop)


def guarded_protocol(guard, args: argparse.Namespace) -> type:
    """uvicorn's HTTP protocol class (`--http`, named as uvicorn names them), guarded."""
    from uvicorn.config import HTTP_PROTOCOLS
    from uvicorn.importer import import_from_string

    return guard.protocol_class(import_from_string(HTTP_PROTOCOLS[args.http]))


def worker_app():
    """The app of one worker process of `serve --workers N` (uvicorn calls this factory
    in each process it spawns; textclf.serving.workers). A worker that cannot start
    leaves its reason for the parent and exits with uvicorn's start-up failure status,
    on which uvicorn stops the server instead of restarting the worker for ever."""
    from uvicorn.config import STARTUP_FAILURE

    from textclf.serving.workers import WorkerGroup, use_protocol

    group, settings = WorkerGroup.from_env()
    args = argparse.Namespace(**settings)
    try:
        app, guard = build_app(args, group)
    except Exception as err:  # noqa: BLE001 - a crash would be restarted for ever
        if not isinstance(err, UserError):
            traceback.print_exc()
        print(f"serve: worker {os.getpid()}: error: {err}", file=sys.stderr, flush=True)
        group.startup_failed(str(err))
        sys.exit(STARTUP_FAILURE)
    use_protocol(guarded_protocol(guard, args))
    return app


def answered_requests(log_dir: Path, window: int):
    """The requests POST /feedback accepts labels for, read back from the prediction log;
    an unreadable log starts the server with none (labels for them: `feedback import`)."""
    from textclf.serving.feedback import AnsweredRequests

    try:
        return AnsweredRequests.from_log(log_dir, window)
    except (UserError, OSError) as err:
        print(f"serve: warning: cannot read the prediction log back ({err}); POST /feedback "
              f"accepts labels only for requests answered from now on", file=sys.stderr)
        return AnsweredRequests(window)


@exits_on_user_error
def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    # uvicorn handles SIGTERM itself (a graceful shutdown, then the signal raised again so
    # the process ends as killed by it, -15); nothing this command writes needs cleaning
    # up, so the default action, not textclf.errors' exit 143, ends it.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        import uvicorn
    except ImportError:
        raise UserError("textclf serve needs its optional dependencies: "
                        "pip install -e \".[serve]\" (FastAPI and uvicorn)") from None
    if args.workers > 1:
        from textclf.serving.workers import run_parent

        from textclf.model.loading import read_classifier_folder

        check_log_dir(args)     # said once, before N workers load a model to find out
        read_classifier_folder(args.model)          # a folder that is not one, likewise
        run_parent(args.workers, vars(args), f"{__name__}:worker_app")
        return
    app, guard = build_app(args)
    uvicorn.Server(uvicorn_config(app, guard, args)).run()


if __name__ == "__main__":
    main()
