"""The HTTP layer of `textclf serve`: Open Inference Protocol routes (with the model
repository extension's `load`) plus `/predict`, `/feedback` and `/metrics`, errors as
`{"error": "..."}`, over a `DynamicBatcher`, a `ModelRepository` and an optional
`PredictionLog` (with the `FeedbackLog` beside it); in a worker process of `serve
--workers N`, also its `WorkerGroup` (textclf.serving.workers)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import signal
import uuid
from dataclasses import dataclass
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

from textclf import __version__
from textclf.serving.batcher import DynamicBatcher
from textclf.serving.connections import ConnectionGuard, body_limits, quiet_accept_errors
from textclf.serving.feedback import (AnsweredRequests, FeedbackLog, checked_feedback,
                                      feedback_lines)
from textclf.serving.log import PredictionLog, log_lines
from textclf.serving.metrics import ServeMetrics, count_requests
from textclf.serving.protocol import (InferenceRequest, Limits, PredictRequest, ServedModel,
                                      ServeError, checked_texts, infer_response, infer_texts,
                                      model_metadata, predict_response, predictions,
                                      validation_error)
from textclf.serving.repository import LoadedModel, ModelRepository
from textclf.serving.workers import WorkerGroup

log = logging.getLogger("textclf.serve")


@dataclass(frozen=True)
class HttpSettings:
    """What one request and one connection may take (serve's flags), and what is exposed."""
    max_body_bytes: int = 16 * 2**20
    request_timeout: float = 30.0
    openapi: bool = False        # --openapi: serve /openapi.json (never /docs: it loads a CDN)


def create_app(repository: ModelRepository, batcher: DynamicBatcher, limits: Limits,
               prediction_log: Optional[PredictionLog],
               feedback_log: Optional[FeedbackLog] = None,
               answered: Optional[AnsweredRequests] = None,
               metrics: Optional[ServeMetrics] = None,
               http: HttpSettings = HttpSettings(),
               guard: Optional[ConnectionGuard] = None,
               group: Optional[WorkerGroup] = None) -> FastAPI:
    """The ASGI app; the batcher's worker runs from startup to shutdown. On shutdown
    (SIGTERM), uvicorn first stops accepting and lets requests in flight finish; then the
    lifespan exit stops the batcher. `/feedback` needs `feedback_log` and `answered` (the
    requests the prediction log holds), else it answers 409. `guard`: the connection guard
    whose protocol class the server runs with (textclf.serving.connections), if any.
    `group`: the worker group of a worker process: ready means every worker is, and a
    version loaded here is announced to the others (and theirs followed)."""
    metrics = metrics or ServeMetrics()
    metrics.watch(batcher, guard)
    name = repository.source.name

    async def reload() -> LoadedModel:
        loaded = await repository.reload()
        if group is not None:
            group.announce_load()
        return loaded

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        loop = asyncio.get_running_loop()
        quiet_accept_errors(loop)
        _reload_on_sighup(loop, reload)
        batcher.start()
        chores = []
        if group is not None:
            group.joined()
            chores = [loop.create_task(_follow_loads(group, repository)),
                      loop.create_task(_sample_every_second(metrics))]
        try:
            yield
        finally:
            for chore in chores:
                chore.cancel()
            if group is not None:
                group.left()
            metrics.leave()
            batcher.stop()

    app = FastAPI(title="textclf serve", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json" if http.openapi else None)
    app.state.batcher = batcher
    app.state.repository = repository
    app.state.metrics = metrics
    _add_error_handlers(app)

    def known(requested: str, version: Optional[str] = None) -> None:
        """The model (and version, where the path names one: /versions/{version}) is the
        one served, or 404."""
        if requested != name:
            raise ServeError(404, f"model {requested!r} not found; this server serves "
                                  f"{name!r}")
        served = repository.current.served.version
        if version is not None and version != served:
            raise ServeError(404, f"model {requested!r} version {version!r} not found; this "
                                  f"server serves version {served!r}")

    async def answer(texts: list[str], request_id: str) -> tuple:
        try:
            engine, probs = await batcher.classify(texts)
        except asyncio.CancelledError:
            # uvicorn cancels what still runs once --grace-seconds are over; uncaught,
            # the client would get a plain-text 500 and the log a traceback.
            raise ServeError(503, "the server is shutting down and stopped waiting for "
                                  "this request (--grace-seconds ran out); send it again "
                                  "to a server that is up") from None
        model = engine.served
        answers = predictions(model, probs)
        metrics.answered([a["label"] for a in answers])
        if prediction_log is not None:
            if _record(prediction_log, model, request_id, texts, answers):
                if answered is not None:
                    answered.add(request_id, len(texts), model.labels)
            else:
                metrics.log_errors.labels("predictions").inc()
        return model, probs, answers

    @app.get("/v2")
    async def server_metadata():
        return {"name": "textclf", "version": __version__, "extensions": []}

    @app.api_route("/v2/health/live", methods=["GET", "HEAD"])
    async def live():
        return {"live": True}

    def serving() -> bool:
        return batcher.running and (group is None or group.all_ready())

    @app.api_route("/v2/health/ready", methods=["GET", "HEAD"])
    async def ready():
        return JSONResponse({"ready": serving()}, 200 if serving() else 503)

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def metadata(name: str, version: Optional[str] = None):
        known(name, version)
        return model_metadata(repository.current.served)

    @app.api_route("/v2/models/{name}/ready", methods=["GET", "HEAD"])
    @app.api_route("/v2/models/{name}/versions/{version}/ready", methods=["GET", "HEAD"])
    async def model_ready(name: str, version: Optional[str] = None):
        known(name, version)
        return JSONResponse({"name": name, "ready": serving()}, 200 if serving() else 503)

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(name: str, request: Request, version: Optional[str] = None):
        known(name, version)
        body = await parsed(request, InferenceRequest)
        texts = infer_texts(body, limits)
        request_id = body.id or uuid.uuid4().hex
        model, probs, _ = await answer(texts, request_id)
        return JSONResponse(infer_response(model, request_id, probs, body.outputs))

    @app.post("/v2/repository/models/{name}/load")
    async def load(name: str):
        """OIP model repository extension: read the model folder again and answer with
        it (textclf.serving.repository)."""
        known(name)
        loaded = await reload()
        log.warning("serve: now answering with %s (%s)", loaded.served.version,
                    loaded.precision)
        return JSONResponse({"name": name, "model_version": loaded.served.version,
                             "labels": list(loaded.served.labels)})

    @app.post("/predict")
    async def predict(request: Request):
        body = await parsed(request, PredictRequest)
        texts = checked_texts(body.texts, limits, "texts")
        request_id = body.id or uuid.uuid4().hex
        model, _, answers = await answer(texts, request_id)
        return JSONResponse(predict_response(model, request_id, answers))

    @app.get("/metrics")
    async def scrape():
        body, content_type = metrics.scrape()
        return Response(body, media_type=content_type)

    @app.post("/feedback")
    async def feedback(request: Request):
        if feedback_log is None or answered is None:
            raise ServeError(409, "feedback is off: this server runs with --no-log, so there "
                                  "is no prediction log to join labels with; restart it "
                                  "without --no-log")
        body, labels = await request.body(), repository.current.served.labels
        try:
            items = checked_feedback(body, answered, labels)
        except ServeError as err:
            if err.status != 404:
                raise
            await answered.catch_up()       # another worker may have answered it
            items = checked_feedback(body, answered, labels)
        now = dt.datetime.now(dt.timezone.utc)
        try:
            feedback_log.append(now, feedback_lines(now, items, "api"))
        except OSError as err:
            metrics.log_errors.labels("feedback").inc()
            log.error("feedback log: could not write to %s: %s", feedback_log.folder, err)
            raise ServeError(503, f"could not write the feedback log: {err.strerror}; "
                                  f"nothing was recorded, send the labels again") from None
        metrics.feedback.inc(len(items))
        return JSONResponse({"accepted": len(items)})

    # Outermost first: count every request (refusals included), then the body limits.
    app.add_middleware(_Wrap, wrap=lambda inner: body_limits(
        inner, guard, http.max_body_bytes, http.request_timeout))
    app.add_middleware(_Wrap, wrap=lambda inner: count_requests(inner, metrics, app.routes))
    return app


class _Wrap:
    """Starlette's add_middleware takes a class called with the inner app; this turns a
    function middleware (`wrap(inner) -> asgi app`) into one."""

    def __init__(self, app, wrap):
        self._app = wrap(app)

    async def __call__(self, scope, receive, send):
        await self._app(scope, receive, send)


def _reload_on_sighup(loop, reload) -> None:
    """SIGHUP loads the model folder again, as POST .../load does (main thread only: a
    server on another thread, as in the tests, has only the endpoint)."""

    async def on_sighup() -> None:
        try:
            loaded = await reload()
            log.warning("serve: SIGHUP: now answering with %s", loaded.served.version)
        except ServeError as err:
            log.error("serve: SIGHUP: %s", err.message)

    try:
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(on_sighup()))
    except (ValueError, RuntimeError, NotImplementedError):
        pass


async def _follow_loads(group: WorkerGroup, repository: ModelRepository,
                        every_s: float = 0.5) -> None:
    """Load the model folder again whenever another worker announces that it did."""
    while True:
        await asyncio.sleep(every_s)
        if not group.load_announced():
            continue
        try:
            loaded = await repository.reload()
            log.warning("serve: worker %d: another worker loaded a new version; now "
                        "answering with %s", os.getpid(), loaded.served.version)
        except ServeError as err:
            log.error("serve: worker %d: %s", os.getpid(), err.message)


async def _sample_every_second(metrics: ServeMetrics) -> None:
    """Keep this worker's queue and connection figures fresh for the other workers'
    scrapes (textclf.serving.metrics)."""
    while True:
        metrics.sample()
        await asyncio.sleep(1)


async def parsed(request: Request, message: type[BaseModel]):
    """The body as `message`, whatever its content type (`curl -d` sends a form type):
    400 if it is not JSON, 422 naming the first wrong field."""
    try:
        return message.model_validate_json(await request.body())
    except ValidationError as err:
        raise validation_error(list(err.errors())) from None


def _record(prediction_log: PredictionLog, model: ServedModel, request_id: str,
            texts: list[str], answers: list[dict]) -> bool:
    """Log one request; False if the write failed."""
    now = dt.datetime.now(dt.timezone.utc)
    try:
        prediction_log.append(now, log_lines(now, request_id, model.version, texts, answers,
                                             model.calibrated))
    except OSError as err:
        # The client still gets its answer; the gap in the log is reported loudly.
        log.error("prediction log: could not write request %s to %s: %s", request_id,
                  prediction_log.folder, err)
        return False
    return True


def _add_error_handlers(app: FastAPI) -> None:
    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(ServeError)
    async def refused(request: Request, exc: ServeError):
        return error(exc.status, exc.message)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception):
        log.exception("request %s %s failed", request.method, request.url.path)
        return error(500, f"internal error: {type(exc).__name__}: {exc}")
