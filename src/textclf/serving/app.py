"""The HTTP layer of `textclf serve`: Open Inference Protocol routes plus `/predict` and
`/feedback`, errors as `{"error": "..."}`, over a `DynamicBatcher` and an optional
`PredictionLog` (with the `FeedbackLog` beside it)."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import uuid
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

from textclf import __version__
from textclf.serving.batcher import DynamicBatcher
from textclf.serving.feedback import (AnsweredRequests, FeedbackLog, checked_feedback,
                                      feedback_lines)
from textclf.serving.log import PredictionLog, log_lines
from textclf.serving.protocol import (InferenceRequest, Limits, PredictRequest, ServedModel,
                                      ServeError, checked_texts, infer_response, infer_texts,
                                      model_metadata, predict_response, predictions,
                                      validation_error)

log = logging.getLogger("textclf.serve")


def create_app(model: ServedModel, batcher: DynamicBatcher, limits: Limits,
               prediction_log: Optional[PredictionLog],
               feedback_log: Optional[FeedbackLog] = None,
               answered: Optional[AnsweredRequests] = None) -> FastAPI:
    """The ASGI app; the batcher's worker runs from startup to shutdown. On shutdown
    (SIGTERM), uvicorn first stops accepting and lets requests in flight finish; then the
    lifespan exit stops the batcher. `/feedback` needs `feedback_log` and `answered` (the
    requests the prediction log holds), else it answers 409."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        try:
            yield
        finally:
            batcher.stop()

    app = FastAPI(title="textclf serve", version=__version__, lifespan=lifespan)
    app.state.batcher = batcher
    _add_error_handlers(app)

    def known(name: str) -> None:
        if name != model.name:
            raise ServeError(404, f"model {name!r} not found; this server serves "
                                  f"{model.name!r}")

    async def answer(texts: list[str], request_id: str) -> tuple:
        probs = await batcher.classify(texts)
        answers = predictions(model, probs)
        if prediction_log is not None and _record(prediction_log, model, request_id,
                                                  texts, answers) and answered is not None:
            answered.add(request_id, len(texts))
        return probs, answers

    @app.get("/v2")
    async def server_metadata():
        return {"name": "textclf", "version": __version__, "extensions": []}

    @app.get("/v2/health/live")
    async def live():
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready():
        return JSONResponse({"ready": batcher.running}, 200 if batcher.running else 503)

    @app.get("/v2/models/{name}")
    async def metadata(name: str):
        known(name)
        return model_metadata(model)

    @app.get("/v2/models/{name}/ready")
    async def model_ready(name: str):
        known(name)
        return JSONResponse({"name": name, "ready": batcher.running},
                            200 if batcher.running else 503)

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request):
        known(name)
        body = await parsed(request, InferenceRequest)
        texts = infer_texts(body, limits)
        request_id = body.id or uuid.uuid4().hex
        probs, _ = await answer(texts, request_id)
        return JSONResponse(infer_response(model, request_id, probs, body.outputs))

    @app.post("/predict")
    async def predict(request: Request):
        body = await parsed(request, PredictRequest)
        texts = checked_texts(body.texts, limits, "texts")
        request_id = body.id or uuid.uuid4().hex
        _, answers = await answer(texts, request_id)
        return JSONResponse(predict_response(model, request_id, answers))

    @app.post("/feedback")
    async def feedback(request: Request):
        if feedback_log is None or answered is None:
            raise ServeError(409, "feedback is off: this server runs with --no-log, so there "
                                  "is no prediction log to join labels with; restart it "
                                  "without --no-log")
        items = checked_feedback(await request.body(), answered, model.labels)
        now = dt.datetime.now(dt.timezone.utc)
        try:
            feedback_log.append(now, feedback_lines(now, items, "api"))
        except OSError as err:
            log.error("feedback log: could not write to %s: %s", feedback_log.folder, err)
            raise ServeError(503, f"could not write the feedback log: {err.strerror}; "
                                  f"nothing was recorded, send the labels again") from None
        return JSONResponse({"accepted": len(items)})

    return app


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
        prediction_log.append(now, log_lines(now, request_id, model.version, texts, answers))
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
