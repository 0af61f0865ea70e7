"""What `textclf serve` accepts and answers: the Open Inference Protocol (KServe v2) REST
messages for a text classifier, the plain `/predict` form, and the request limits.

Pure: values in, dicts out, `ServeError` (an HTTP status and a message naming the field)
for anything a client got wrong. The HTTP layer is in `textclf.serving.app`.

Inference request (`POST /v2/models/{name}/infer`): one input of datatype `BYTES`, shape
`[N]` (or any shape of N elements, such as `[N, 1]`), `data` the N strings, flat or nested
in row-major order. The response has four outputs, or those asked for in
the request's `outputs`:

    label          BYTES [N]     the predicted label (as `textclf predict`)
    probability    FP32  [N]     its probability, rounded to 6 digits (as `textclf predict`)
    probabilities  FP32  [N, C]  every class's probability, row-major, rounded to 6 digits
    classes        BYTES [C]     the class names in the column order of `probabilities`
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, Optional, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, StrictBool, StrictFloat, StrictInt, StringConstraints

from textclf.canonical import canonical_text

# OIP parameters are scalars; extra="forbid" turns a misspelt field into a 422 naming it.
Parameters = dict[str, Union[StrictBool, StrictInt, StrictFloat, str]]
OUTPUTS = ("label", "probability", "probabilities", "classes")
PLATFORM = "textclf_pytorch"
# A request id is copied into every logged line of its texts: bounded, so that a client
# cannot make one request write megabytes of log (a UUID has 36 characters).
MAX_ID_CHARS = 256
RequestId = Annotated[str, StringConstraints(max_length=MAX_ID_CHARS)]


class ServeError(Exception):
    """A request the server refuses: HTTP `status` and a message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class RequestInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    shape: list[int]
    datatype: str
    parameters: Optional[Parameters] = None
    data: list[Any]


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    parameters: Optional[Parameters] = None


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: Optional[RequestId] = None
    parameters: Optional[Parameters] = None
    inputs: list[RequestInput]
    outputs: Optional[list[RequestOutput]] = None


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: Optional[RequestId] = None  # echoed, and the request_id in the prediction log
    texts: list[Any]


@dataclass(frozen=True)
class Limits:
    """What one request may hold (`--max-texts`, `--max-chars`, `--on-long-text`)."""
    max_texts: int = 256
    max_chars: int = 10_000
    on_long_text: Literal["truncate", "reject"] = "truncate"


@dataclass(frozen=True)
class ServedModel:
    """What the server says about its model; `labels[i]` is class id i."""
    name: str
    version: str
    labels: tuple[str, ...]
    max_length: int
    calibrated: Optional[bool] = None   # answers with calibrated probabilities (None: unsaid)


def checked_texts(texts: list[Any], limits: Limits, field: str) -> list[str]:
    """The texts to classify, or ServeError naming `field[i]`.

    Too many texts: 413. A non-string, or a text with nothing visible in it (empty,
    whitespace, or only invisible and control characters such as U+200B or U+0000: what
    `canonical_text` removes): 422, as `textclf predict` refuses them. Longer than
    `max_chars`: cut to `max_chars` characters (`truncate`; the model only reads its first
    `max_length` tokens anyway; 422 if nothing visible is left) or 413 (`reject`).
    """
    if not texts:
        raise ServeError(422, f"{field}: expected at least one text, found an empty list")
    if len(texts) > limits.max_texts:
        raise ServeError(413, f"{field}: {len(texts)} texts, more than the {limits.max_texts} "
                              f"one request may hold (--max-texts); split the request")
    checked = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ServeError(422, f"{field}[{i}]: expected a string, found "
                                  f"{type(text).__name__} {text!r:.40}")
        if len(text) > limits.max_chars:
            if limits.on_long_text == "reject":
                raise ServeError(413, f"{field}[{i}]: {len(text)} characters, more than "
                                      f"--max-chars {limits.max_chars}")
            text = text[:limits.max_chars]
            if not canonical_text(text):
                raise ServeError(422, f"{field}[{i}]: nothing visible in the first "
                                      f"{limits.max_chars} characters (--max-chars), the part "
                                      f"the model would read; expected text to classify")
        if not canonical_text(text):
            raise ServeError(422, f"{field}[{i}]: text is empty, whitespace or invisible "
                                  f"characters only; expected text to classify")
        checked.append(text)
    return checked


def infer_texts(request: InferenceRequest, limits: Limits) -> list[str]:
    """The texts of an OIP request: exactly one BYTES input of shape [N]."""
    if len(request.inputs) != 1:
        raise ServeError(422, f"inputs: expected exactly one input (the texts, datatype BYTES, "
                              f"shape [N]), found {len(request.inputs)}")
    tensor = request.inputs[0]
    if tensor.datatype != "BYTES":
        raise ServeError(422, f"inputs[0].datatype: expected 'BYTES' (texts), found "
                              f"{tensor.datatype!r}")
    texts = row_major(tensor.data, len(tensor.shape))
    if any(size < 0 for size in tensor.shape) or np.prod(tensor.shape) != len(texts):
        raise ServeError(422, f"inputs[0].shape: expected a shape of {len(texts)} elements "
                              f"for {len(texts)} texts in data ([{len(texts)}], or "
                              f"[{len(texts)}, 1]), found {tensor.shape}")
    for i, wanted in enumerate(request.outputs or []):
        if wanted.name not in OUTPUTS:
            raise ServeError(422, f"outputs[{i}].name: unknown output {wanted.name!r}; "
                                  f"expected one of {', '.join(OUTPUTS)}")
    return checked_texts(texts, limits, "inputs[0].data")


def row_major(data: list[Any], dimensions: int) -> list[Any]:
    """A tensor's data as the protocol allows it, flat or nested ([["a"], ["b"]] for shape
    [2, 1]), in row-major order; nesting deeper than the shape is left for the text
    check to name."""
    flat = data
    for _ in range(max(dimensions - 1, 0)):
        if not all(isinstance(item, list) for item in flat):
            break
        flat = [element for item in flat for element in item]
    return flat


def rounded(probs: np.ndarray) -> np.ndarray:
    """Probabilities as `textclf predict` writes them (textclf.model.labeller.rounded)."""
    from textclf.model.labeller import rounded as same_as_predict

    return same_as_predict(probs)


def infer_response(model: ServedModel, request_id: str, probs: np.ndarray,
                   wanted: Optional[list[RequestOutput]]) -> dict:
    """OIP inference response for probabilities `probs` (N, C)."""
    n, c = probs.shape
    table = rounded(probs)
    best = probs.argmax(axis=1)
    tensors = {
        "label": ("BYTES", [n], [model.labels[i] for i in best]),
        "probability": ("FP32", [n], rounded(probs.max(axis=1)).tolist()),
        "probabilities": ("FP32", [n, c], table.ravel().tolist()),
        "classes": ("BYTES", [c], list(model.labels)),
    }
    names = [w.name for w in wanted] if wanted else list(OUTPUTS)
    outputs = [{"name": name, "datatype": tensors[name][0], "shape": tensors[name][1],
                "data": tensors[name][2]} for name in names]
    return {"model_name": model.name, "model_version": model.version, "id": request_id,
            "outputs": outputs}


def predictions(model: ServedModel, probs: np.ndarray) -> list[dict]:
    """One {label, probability, probabilities} per text; also the prediction log's core."""
    table = rounded(probs)
    best = probs.argmax(axis=1)
    top = rounded(probs.max(axis=1))
    return [{"label": model.labels[b], "probability": float(p),
             "probabilities": dict(zip(model.labels, row.tolist()))}
            for b, p, row in zip(best, top, table)]


def predict_response(model: ServedModel, request_id: str, answers: list[dict]) -> dict:
    return {"model_name": model.name, "model_version": model.version, "id": request_id,
            "predictions": answers}


def model_metadata(model: ServedModel) -> dict:
    """OIP model metadata: name, versions, platform, input and output tensors."""
    c = len(model.labels)
    return {"name": model.name, "versions": [model.version], "platform": PLATFORM,
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": "label", "datatype": "BYTES", "shape": [-1]},
                        {"name": "probability", "datatype": "FP32", "shape": [-1]},
                        {"name": "probabilities", "datatype": "FP32", "shape": [-1, c]},
                        {"name": "classes", "datatype": "BYTES", "shape": [c]}]}


def validation_error(errors: list[dict]) -> ServeError:
    """A pydantic validation error as one ServeError: 400 for a body that is not JSON,
    422 naming the first wrong field (e.g. `inputs[0].shape`) otherwise."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    if first.get("type") == "json_invalid":
        reason = first.get("ctx", {}).get("error") or first.get("msg", "")
        return ServeError(400, f"malformed JSON: {reason}")
    loc = first.get("loc", ())
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    if first.get("type") == "extra_forbidden":
        return ServeError(422, f"{field}: unknown field; check its spelling against the "
                               f"protocol")
    return ServeError(422, f"{field or 'request body'}: {first.get('msg', 'invalid')}")
