"""`textclf serve`: Open Inference Protocol endpoints, refusals, dynamic batching, the
prediction log, equality with `textclf predict`, and graceful shutdown on SIGTERM.

Servers bind 127.0.0.1 on a free port; clients are real HTTP (httpx)."""

from __future__ import annotations

import asyncio
import datetime as dt
import http.client
import json
import queue
import random
import signal
import socket
import subprocess
import threading
import time
from types import SimpleNamespace

import httpx
import numpy as np
import pytest

from conftest import LABELS
from serve_harness import (TEXTCLF, build_model_folder, json_response, process_server,
                           send_json, thread_server)
from textclf.model.loading import weights_sha256
from textclf.serving.repository import git_revision, model_version
from textclf.serving.batcher import STOP, BatchSettings, DynamicBatcher, take_batch
from textclf.serving.log import FIELDS, PredictionLog, log_file_name, log_lines
from textclf.serving.protocol import Limits, ServeError, checked_texts

TEXTS = ["the food was awful dreadful", "a poor weak film", "okay average room",
         "good nice phone", "superb brilliant book", "review 3: the app was good nice",
         "It rained all day and the museum was closed.", "nothing to add"]


@pytest.fixture(scope="module")
def model_folder(tiny_model_dir, tmp_path_factory):
    return build_model_folder(tiny_model_dir, tmp_path_factory.mktemp("served") / "clf")


@pytest.fixture(scope="module")
def server(model_folder, tmp_path_factory):
    """(url, app, log folder): limits small enough to test, reject long texts."""
    logs = tmp_path_factory.mktemp("logs")
    # fp32 on every CPU: the batching test holds answers to the 7th digit, which int8
    # (what `auto` may pick without AMX) does not promise; test_onnx_int8 serves int8.
    with thread_server(["--model", str(model_folder), "--log-dir", str(logs),
                        "--max-texts", "10", "--max-chars", "200", "--on-long-text", "reject",
                        "--max-wait-ms", "20", "--threads", "1",
                        "--precision", "fp32"]) as (url, app):
        yield url, app, logs


def infer_body(texts, **extra):
    return {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)],
                        "data": texts}], **extra}


def outputs(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return {out["name"]: out for out in response.json()["outputs"]}


def test_health_and_metadata(server, model_folder):
    url, _, _ = server
    assert httpx.get(f"{url}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{url}/v2/health/ready").json() == {"ready": True}
    assert httpx.get(f"{url}/v2/models/clf/ready").json() == {"name": "clf", "ready": True}
    for path in ["/v2/health/live", "/v2/health/ready", "/v2/models/clf/ready"]:
        head = httpx.head(f"{url}{path}")     # what some load balancers' health checks send
        assert (head.status_code, head.content) == (200, b"")
    meta = httpx.get(f"{url}/v2/models/clf").json()
    assert meta["name"] == "clf"
    assert meta["versions"] == [f"sha256:{weights_sha256(model_folder)}"]
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert {o["name"]: o["shape"] for o in meta["outputs"]} == {
        "label": [-1], "probability": [-1], "probabilities": [-1, 5], "classes": [5]}


def test_infer_answers_each_text(server):
    url, _, _ = server
    response = httpx.post(f"{url}/v2/models/clf/infer", json=infer_body(TEXTS, id="req-7"))
    out = outputs(response)
    assert response.json()["id"] == "req-7"
    assert response.json()["model_version"].startswith("sha256:")
    assert out["classes"]["data"] == LABELS
    table = np.array(out["probabilities"]["data"]).reshape(out["probabilities"]["shape"])
    assert table.shape == (len(TEXTS), len(LABELS))
    np.testing.assert_allclose(table.sum(axis=1), 1, atol=1e-5)
    assert out["label"]["data"] == [LABELS[i] for i in table.argmax(axis=1)]
    assert out["probability"]["data"] == table.max(axis=1).tolist()
    assert len(set(out["label"]["data"])) > 1  # the model tells texts apart

    # The plain endpoint answers the same; asked-for outputs come alone, in order.
    plain = httpx.post(f"{url}/predict", json={"texts": TEXTS}).json()["predictions"]
    assert [p["label"] for p in plain] == out["label"]["data"]
    assert [list(p["probabilities"].values()) for p in plain] == table.tolist()
    some = outputs(httpx.post(f"{url}/v2/models/clf/infer", json=infer_body(
        TEXTS[:2], outputs=[{"name": "probability"}, {"name": "label"}])))
    assert list(some) == ["probability", "label"]


@pytest.mark.parametrize("shape, data", [
    ([2], ["good", "awful"]), ([2, 1], ["good", "awful"]), ([2, 1], [["good"], ["awful"]]),
    ([1, 2], [["good", "awful"]]),
])
def test_infer_takes_n_texts_in_any_shape_of_n_flat_or_nested(shape, data):
    # Triton and KServe clients send text as a BYTES tensor [N, 1] (np.array([[b"a"]])).
    from textclf.serving.protocol import InferenceRequest, Limits, infer_texts

    request = InferenceRequest(inputs=[{"name": "text", "datatype": "BYTES", "shape": shape,
                                        "data": data}])
    assert infer_texts(request, Limits()) == ["good", "awful"]


@pytest.mark.parametrize("shape, data, message", [
    ([3, 1], [["good"], ["awful"]], "expected a shape of 2 elements for 2 texts"),
    ([-2, -1], ["good", "awful"], "found [-2, -1]"),
    ([2, 1], [["good", "x"], ["awful"]], "expected a shape of 3 elements"),
    ([1, 1], [[["deep"]]], "inputs[0].data[0]: expected a string, found list"),
])
def test_infer_refuses_a_shape_that_is_not_the_data(shape, data, message):
    from textclf.serving.protocol import InferenceRequest, Limits, ServeError, infer_texts

    request = InferenceRequest(inputs=[{"name": "text", "datatype": "BYTES", "shape": shape,
                                        "data": data}])
    with pytest.raises(ServeError) as error:
        infer_texts(request, Limits())
    assert error.value.status == 422 and message in error.value.message


def test_a_text_visible_only_past_max_chars_is_refused_not_classified_as_blank():
    from textclf.serving.protocol import Limits, ServeError, checked_texts

    limits = Limits(max_chars=8)
    assert checked_texts(["good film, really"], limits, "texts") == ["good fil"]
    for hidden in (" " * 20 + "good", "\u200b" * 20 + "awful"):
        with pytest.raises(ServeError) as error:
            checked_texts(["fine", hidden], limits, "texts")
        assert error.value.status == 422
        assert error.value.message.startswith("texts[1]: nothing visible in the first 8 "
                                              "characters (--max-chars)")


LONG = "x" * 201


@pytest.mark.parametrize("path, body, status, names", [
    ("/predict", b'{"texts": ["a", ', 400, "malformed JSON"),
    ("/predict", b"", 400, "malformed JSON"),
    ("/predict", b'{"texts": ["lone \\ud800 surrogate"]}', 400, "malformed JSON"),
    ("/predict", {"text": ["a"]}, 422, "text"),
    ("/predict", {"texts": "a"}, 422, "texts"),
    ("/predict", {"texts": []}, 422, "texts"),
    ("/predict", {"texts": ["fine", "  \n"]}, 422, "texts[1]: text is empty"),
    ("/predict", {"texts": ["fine", 3]}, 422, "texts[1]: expected a string"),
    ("/predict", {"texts": ["a"] * 11}, 413, "11 texts, more than the 10"),
    ("/predict", {"texts": ["a", LONG]}, 413, "texts[1]: 201 characters"),
    ("/v2/models/clf/infer", {}, 422, "inputs: Field required"),
    ("/v2/models/clf/infer", infer_body(["a"]) | {"input": []}, 422, "input: unknown field"),
    ("/v2/models/clf/infer", infer_body(["a"]) | {"outputs": [{"name": "logits"}]}, 422,
     "outputs[0].name: unknown output 'logits'"),
    ("/v2/models/clf/infer", {"inputs": [{"name": "t", "datatype": "FP32", "shape": [1],
                                          "data": [1.0]}]}, 422, "inputs[0].datatype"),
    ("/v2/models/clf/infer", {"inputs": [{"name": "t", "datatype": "BYTES", "shape": [2],
                                          "data": ["a"]}]}, 422, "inputs[0].shape"),
    ("/v2/models/clf/infer", {"inputs": [{"name": "t", "datatype": "BYTES",
                                          "data": ["a"]}]}, 422, "inputs[0].shape"),
    ("/v2/models/clf/infer", infer_body(["ok", ""]), 422, "inputs[0].data[1]: text is empty"),
    ("/v2/models/clf/infer", infer_body(["a"] * 11), 413, "more than the 10"),
    ("/v2/models/other/infer", infer_body(["a"]), 404, "model 'other' not found"),
])
def test_refusals_are_json_errors_naming_the_field(server, path, body, status, names):
    url, _, _ = server
    if isinstance(body, bytes):
        response = httpx.post(url + path, content=body)
    else:
        response = httpx.post(url + path, json=body)
    assert response.status_code == status, response.text
    assert list(response.json()) == ["error"]
    assert names in response.json()["error"]


def test_the_versioned_paths_answer_for_the_version_served(server):
    """OIP's /v2/models/{name}/versions/{version}[/ready|/infer], as KServe's and Triton's
    clients call them when given a version."""
    url, _, _ = server
    version = httpx.get(f"{url}/v2/models/clf").json()["versions"][0]
    base = f"{url}/v2/models/clf/versions/{version}"

    assert httpx.get(base).json()["versions"] == [version]
    assert httpx.get(f"{base}/ready").json() == {"name": "clf", "ready": True}
    answer = httpx.post(f"{base}/infer", json=infer_body(TEXTS[:1]))
    assert answer.status_code == 200 and answer.json()["model_version"] == version
    other = httpx.post(f"{url}/v2/models/clf/versions/sha256:0/infer", json=infer_body(["a"]))
    assert other.status_code == 404
    assert other.json() == {"error": f"model 'clf' version 'sha256:0' not found; this server "
                                     f"serves version {version!r}"}


def test_unknown_model_and_path_are_404(server):
    url, _, _ = server
    for path in ("/v2/models/other", "/v2/models/other/ready", "/v3/nothing"):
        response = httpx.get(url + path)
        assert response.status_code == 404 and "error" in response.json()


async def _clients(url, bodies):
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        return await asyncio.gather(*(client.post(path, json=body) for path, body in bodies))


def test_concurrent_clients_share_batches_and_bad_requests_stay_alone(server):
    url, app, _ = server
    alone = outputs(httpx.post(f"{url}/v2/models/clf/infer", json=infer_body(TEXTS)))
    before = app.state.batcher.batches
    good = [("/v2/models/clf/infer", infer_body([text])) for text in TEXTS] * 2
    bad = [("/predict", {"texts": [""]}), ("/predict", {"texts": ["a"] * 11})] * 3
    mixed = good + bad
    random.Random(0).shuffle(mixed)
    responses = asyncio.run(_clients(url, mixed))
    answered = [(body["inputs"][0]["data"][0], r) for r, (path, body) in zip(responses, mixed)
                if path.endswith("infer")]
    refused = [r for r, (path, _) in zip(responses, mixed) if path == "/predict"]
    assert [r.status_code for _, r in answered] == [200] * len(good)
    assert sorted(r.status_code for r in refused) == [413] * 3 + [422] * 3
    expected = dict(zip(TEXTS, zip(alone["label"]["data"], alone["probability"]["data"])))
    for text, response in answered:
        out = outputs(response)
        label, probability = expected[text]
        assert out["label"]["data"] == [label]
        # Other texts in a batch move fp32 sums in the 7th digit at most.
        assert out["probability"]["data"][0] == pytest.approx(probability, abs=2e-6)
    assert app.state.batcher.batches - before < len(answered)  # they were batched


def test_prediction_log_has_one_line_per_text(server):
    url, _, logs = server
    texts = ["log me please", "and me too"]
    body = httpx.post(f"{url}/predict", json={"texts": texts, "id": "log-test-1"}).json()
    assert body["id"] == "log-test-1"
    lines = [json.loads(line) for path in sorted(logs.glob("predictions-*.jsonl"))
             for line in path.read_text(encoding="utf-8").splitlines()]
    mine = [line for line in lines if line["request_id"] == body["id"]]
    assert [tuple(line) for line in mine] == [FIELDS, FIELDS]
    assert [line["text"] for line in mine] == texts
    for line, answer in zip(mine, body["predictions"]):
        assert line["model_version"] == body["model_version"]
        assert (line["label"], line["probability"], line["probabilities"]) == (
            answer["label"], answer["probability"], answer["probabilities"])
        when = dt.datetime.fromisoformat(line["time"])
        assert when.utcoffset() == dt.timedelta(0)
        assert abs((dt.datetime.now(dt.timezone.utc) - when).total_seconds()) < 60
    refused = [line for line in lines if line["text"].strip() == ""]
    assert refused == []  # refused requests are not logged


def test_truncation_and_no_log(model_folder, tmp_path):
    logs = tmp_path / "logs"
    with thread_server(["--model", str(model_folder), "--log-dir", str(logs), "--no-log",
                        "--max-chars", "12", "--threads", "1"]) as (url, _):
        long = httpx.post(f"{url}/predict", json={"texts": ["superb brilliant and more"]})
        cut = httpx.post(f"{url}/predict", json={"texts": ["superb brill"]})
        assert long.status_code == 200
        assert long.json()["predictions"] == cut.json()["predictions"]
    assert not logs.exists()


def test_checked_texts_limits():
    limits = Limits(max_texts=3, max_chars=5, on_long_text="truncate")
    assert checked_texts(["abcdefgh", "ab"], limits, "texts") == ["abcde", "ab"]
    with pytest.raises(ServeError) as err:
        checked_texts(["a", "\t"], limits, "texts")
    assert (err.value.status, err.value.message[:8]) == (422, "texts[1]")


def test_take_batch_fills_up_to_the_limit_and_carries_the_rest():
    jobs = queue.Queue()
    sizes = [2, 3, 4, 1]
    for size in sizes:
        jobs.put(SimpleNamespace(texts=["t"] * size))
    settings = BatchSettings(max_batch_size=6, max_wait_ms=50)
    batch, carry = take_batch(jobs, settings, None)
    assert [len(j.texts) for j in batch] == [2, 3] and len(carry.texts) == 4
    batch, carry = take_batch(jobs, settings, carry)
    assert [len(j.texts) for j in batch] == [4, 1] and carry is None
    # Alone, a job waits max_wait_ms for company (at least that: load only makes it longer).
    start = time.monotonic()
    jobs.put(SimpleNamespace(texts=["t"]))
    batch, _ = take_batch(jobs, settings, None)
    assert len(batch) == 1 and time.monotonic() - start >= 0.04
    # A job that comes while the first waits joins its batch. No timing: the late job is
    # put once the first has been taken, and the minute's wait ends when the batch is full.
    late = SimpleNamespace(texts=["t"] * 5)

    def arrive_late():
        while not jobs.empty():
            time.sleep(0.001)
        jobs.put(late)

    jobs.put(SimpleNamespace(texts=["t"]))
    later = threading.Thread(target=arrive_late)
    later.start()
    batch, carry = take_batch(jobs, BatchSettings(max_batch_size=6, max_wait_ms=60_000), None)
    later.join()
    assert [len(j.texts) for j in batch] == [1, 5] and batch[1] is late and carry is None
    jobs.put(STOP)
    assert take_batch(jobs, settings, None) == ([STOP], None)


class LengthEngine:
    """A toy engine: a text's 'probabilities' are [its length, 1]; 'boom' fails."""

    def probabilities(self, texts):
        if "boom" in texts:
            raise ValueError("cannot classify boom")
        return np.array([[len(t), 1.0] for t in texts])


def test_a_failing_text_fails_only_its_own_request():
    engine = LengthEngine()
    batcher = DynamicBatcher(engine, BatchSettings(max_batch_size=8, max_wait_ms=100))

    async def main():
        batcher.start()
        try:
            return await asyncio.gather(batcher.classify(["ab"]), batcher.classify(["boom"]),
                                        batcher.classify(["abc", "a"]), return_exceptions=True)
        finally:
            batcher.stop()

    first, failed, third = asyncio.run(main())
    assert first[0] is engine and third[0] is engine
    assert first[1].tolist() == [[2, 1]] and third[1].tolist() == [[3, 1], [1, 1]]
    assert isinstance(failed, ValueError)


def test_a_cancelled_request_costs_no_forward_pass():
    """At shutdown uvicorn cancels the requests still waiting when --grace-seconds runs
    out, and a client may leave: their queued texts are not classified (a server given 2 s
    of grace went on computing abandoned batches for 35 s)."""
    started, release = threading.Event(), threading.Event()
    seen = []

    class HeldEngine(LengthEngine):
        def probabilities(self, texts):
            seen.append(list(texts))
            started.set()
            release.wait(30)
            return super().probabilities(texts)

    batcher = DynamicBatcher(HeldEngine(), BatchSettings(max_batch_size=1, max_wait_ms=0))

    async def main():
        batcher.start()
        try:
            first = asyncio.ensure_future(batcher.classify(["running"]))
            await asyncio.get_running_loop().run_in_executor(None, started.wait, 30)
            abandoned = asyncio.ensure_future(batcher.classify(["abandoned"]))
            await asyncio.sleep(0.05)                 # queued behind the running batch
            abandoned.cancel()
            await asyncio.sleep(0.05)
            release.set()
            kept = await batcher.classify(["kept"])
            return await first, kept, abandoned.cancelled()
        finally:
            release.set()
            batcher.stop()

    first, kept, cancelled = asyncio.run(main())
    assert cancelled and seen == [["running"], ["kept"]]
    assert first[1].tolist() == [[7, 1]] and kept[1].tolist() == [[4, 1]]


class FakeTransport:
    def __init__(self, peer):
        self.peer, self.closed = peer, False

    def get_extra_info(self, name):
        return self.peer if name == "peername" else None

    def is_closing(self):
        return self.closed

    def close(self):
        self.closed = True


class FakeHttp:
    """Stands in for uvicorn's HTTP protocol: what the server calls on it."""
    def __init__(self, **kwargs):
        self.shut = 0

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        pass

    def shutdown(self):                  # uvicorn's: an idle connection is closed at once
        self.shut += 1
        self.transport.close()


def test_a_connection_accepted_as_the_server_stops_is_drained_too():
    """uvicorn tells the connections it knows when it stops; one accepted in the same
    moment (its connection_made still queued) was missed and served as usual until
    --grace-seconds ran out. It is drained like the others."""
    from textclf.serving.connections import ConnectionGuard

    async def main():
        guard = ConnectionGuard(max_connections=10, request_timeout=30, drain_seconds=0.05)
        http = guard.protocol_class(FakeHttp)
        known = http(_loop=asyncio.get_running_loop())
        known.connection_made(FakeTransport(("127.0.0.1", 1)))
        known.inner.shutdown()           # what uvicorn's server does when it stops
        assert known.draining and not known.transport.closed     # given its moment
        late = http(_loop=asyncio.get_running_loop())
        late.connection_made(FakeTransport(("127.0.0.1", 2)))
        assert late.draining             # answers carry connection: close from now on
        await asyncio.sleep(0.2)
        return known, late

    known, late = asyncio.run(main())
    assert known.transport.closed and late.transport.closed
    assert known.inner.shut == late.inner.shut == 1


def test_prediction_log_rolls_by_day_and_size_and_resumes(tmp_path):
    day = dt.datetime(2026, 11, 28, 23, 59, tzinfo=dt.timezone.utc)
    lines = log_lines(day, "r1", "v1", ["a text"],
                      [{"label": "x", "probability": 0.5, "probabilities": {"x": 0.5}}])
    log = PredictionLog(tmp_path, max_bytes=len(lines) * 2)
    for _ in range(5):
        log.append(day, lines)
    log.append(day + dt.timedelta(minutes=2), lines)
    names = [log_file_name(day.date(), i) for i in range(3)] + ["predictions-2026-11-29.jsonl"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    assert [len((tmp_path / n).read_bytes()) for n in names] == [len(lines) * k
                                                                for k in (2, 2, 1, 1)]
    # A restarted server continues the last file of the day.
    assert PredictionLog(tmp_path, len(lines) * 2).append(day, lines).name == names[2]


def test_model_version_names_weights_and_git_revision(model_folder, tmp_path):
    assert model_version(model_folder, "v42") == "v42"
    assert git_revision(tmp_path) is None  # not inside a git repository
    repo = tmp_path / "repo"
    (repo / "models").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@e",
                    "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    (repo / "models" / "model.safetensors").write_bytes(b"weights")
    assert model_version(repo / "models") == (
        f"sha256:{weights_sha256(repo / 'models')}+git:{head}")


@pytest.mark.slow
def test_answers_equal_textclf_predict(server, model_folder, tmp_path):
    url, _, _ = server
    result = subprocess.run([TEXTCLF, "predict", "--model", str(model_folder),
                             "--precision", "fp32", *TEXTS],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    expected = [json.loads(line) for line in result.stdout.splitlines()]
    out = outputs(httpx.post(f"{url}/v2/models/clf/infer", json=infer_body(TEXTS)))
    assert out["label"]["data"] == [row["predicted_label"] for row in expected]
    assert out["probability"]["data"] == [round(row["probability"], 6) for row in expected]
    plain = httpx.post(f"{url}/predict", json={"texts": TEXTS}).json()["predictions"]
    assert [(p["label"], p["probability"]) for p in plain] == [
        (row["predicted_label"], round(row["probability"], 6)) for row in expected]


@pytest.mark.slow
def test_sigterm_lets_requests_in_flight_finish(model_folder, tmp_path):
    logs = tmp_path / "logs"
    # A long batching wait keeps the request in flight while SIGTERM arrives.
    with process_server(["--model", str(model_folder), "--log-dir", str(logs),
                         "--max-wait-ms", "5000", "--access-log"], tmp_path) as (url, proc):
        request = send_json(url, "/predict", {"texts": ["in flight"]})
        # The server has read the request once it answers one sent after it: the health
        # check's bytes came later, on a connection accepted later, to the same event loop.
        assert httpx.get(f"{url}/v2/health/live", timeout=60).status_code == 200
        proc.send_signal(signal.SIGTERM)
        status, answer = json_response(request)
        # uvicorn re-raises SIGTERM after its clean shutdown: the usual "ended by SIGTERM".
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
        output = proc.stdout.read()
        assert "Finished server process" in output
        # Answered after the shutdown began: the request was in flight when SIGTERM came.
        assert output.index("Shutting down") < output.index('"POST /predict'), output
        assert status == 200
        assert answer["predictions"][0]["label"] in LABELS
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{url}/v2/health/live", timeout=2)
    logged = [json.loads(line) for p in logs.iterdir() for line in p.read_text().splitlines()]
    assert [line["text"] for line in logged] == ["in flight"]


@pytest.mark.slow
def test_a_request_on_its_way_when_the_server_stops_is_answered_not_dropped(model_folder,
                                                                         tmp_path):
    """uvicorn closes idle connections the moment it stops: a client that had just
    connected, or was sending its next request on a kept-alive connection, got no answer
    (seen in rolling restarts). They get a moment (connections.DRAIN_SECONDS) for that
    request, answered with `connection: close`."""
    with process_server(["--model", str(model_folder), "--no-log"], tmp_path) as (url, proc):
        where = httpx.URL(url)
        just_connected = http.client.HTTPConnection(where.host, where.port, timeout=30)
        just_connected.connect()
        kept_alive = http.client.HTTPConnection(where.host, where.port, timeout=30)
        kept_alive.request("POST", "/predict", body=json.dumps({"texts": ["first"]}),
                           headers={"Content-Type": "application/json"})
        first = kept_alive.getresponse()
        assert first.status == 200 and first.getheader("connection") != "close"
        first.read()
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:     # stopped listening: shutdown has begun
            try:
                socket.create_connection((where.host, where.port), timeout=1).close()
            except ConnectionRefusedError:
                break
            time.sleep(0.02)
        else:
            pytest.fail("the server kept accepting connections after SIGTERM")
        for connection, text in [(just_connected, "on its way"), (kept_alive, "next")]:
            connection.request("POST", "/predict", body=json.dumps({"texts": [text]}),
                               headers={"Content-Type": "application/json"})
            answer = connection.getresponse()
            assert answer.status == 200
            assert answer.getheader("connection") == "close"
            assert json.loads(answer.read())["predictions"][0]["label"] in LABELS
            connection.close()
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)


def test_a_missing_model_folder_exits_2_with_one_line(capsys):
    from textclf import serve

    with pytest.raises(SystemExit) as exit_:
        serve.main(["--model", "no/such/folder", "--no-log"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "no/such/folder" in err and "\n" not in err


@pytest.mark.parametrize("flag", ["--port", "--max-batch-size", "--max-wait-ms", "--max-texts",
                                  "--max-chars", "--max-body-mb", "--request-timeout",
                                  "--max-connections", "--log-max-mb", "--feedback-window",
                                  "--threads", "--grace-seconds", "--workers"])
@pytest.mark.parametrize("value", ["nan", "inf", "-1", "1e13", "0x10", ""])
def test_every_numeric_flag_refuses_what_is_not_a_finite_number_in_range(flag, value, capsys):
    """The review's `--max-wait-ms nan` hung every request, `1e13` killed the batcher and
    `--log-max-mb inf` gave a traceback: argparse refuses them all, naming the flag."""
    from textclf import serve

    with pytest.raises(SystemExit) as exit_:
        serve.parse_args([flag, value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("textclf serve: error: argument " + flag) and "expected" in err


@pytest.mark.parametrize("flag, module", [("--http", "httptools"), ("--loop", "uvloop")])
def test_an_optional_server_part_that_is_not_installed_is_a_usage_error(flag, module, capsys,
                                                                        monkeypatch):
    """Before the model loads (it loaded, then a traceback: No module named 'httptools')."""
    import importlib.util

    from textclf import serve

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == module else real(name, *a))
    with pytest.raises(SystemExit) as exit_:
        serve.parse_args([flag, module])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"textclf serve: error: {flag} {module}: {module} is not installed (pip install "
        f"{module}); or leave {flag} auto, which uses it when it is")
    assert serve.parse_args([flag, "auto"]).http == "auto"


def test_a_log_folder_that_cannot_be_written_stops_the_server_in_one_line(model_folder,
                                                                          tmp_path, capsys):
    from textclf import serve

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit) as exit_:
        serve.main(["--model", str(model_folder), "--log-dir", str(blocker / "logs")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --log-dir {blocker / 'logs'}: cannot write there")
    assert "--no-log" in err and "\n" not in err
