"""`textclf serve` against hostile clients and a bad day on the disk (issue 24's review):
huge and slow bodies, connections that send nothing, unbounded ids, invisible texts, the
API schema, metrics for Prometheus, a new model version under load, and a log that never
keeps half a line."""

from __future__ import annotations

import datetime as dt
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serve_harness import build_model_folder, process_server, thread_server
from textclf.serving.log import PredictionLog, log_file_name, log_lines


@pytest.fixture(scope="module")
def model_folder(tiny_model_dir, tmp_path_factory):
    return build_model_folder(tiny_model_dir, tmp_path_factory.mktemp("served") / "clf")


@pytest.fixture(scope="module")
def server(model_folder, tmp_path_factory):
    """(url, app, log folder): a 64 KB body limit, 1.5 s to send a request, 8 connections."""
    logs = tmp_path_factory.mktemp("logs")
    with thread_server(["--model", str(model_folder), "--log-dir", str(logs),
                        "--max-body-mb", str(64 / 1024), "--request-timeout", "1.5",
                        "--max-connections", "8", "--threads", "1", "--precision", "fp32",
                        "--max-wait-ms", "2"]) as (url, app):
        yield url, app, logs


def connect(url: str) -> socket.socket:
    where = urlsplit(url)
    return socket.create_connection((where.hostname, where.port), timeout=10)


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """(status, body) of the one response the server sends before closing, or (0, b"")
    if it closed without one."""
    raw = b""
    while chunk := sock.recv(65536):
        raw += chunk
    if not raw:
        return 0, b""
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True


def predict(url: str, texts, **extra) -> httpx.Response:
    return httpx.post(f"{url}/predict", json={"texts": texts, **extra}, timeout=30)


# --- 1. bodies over the limit are refused before they are read whole ---

def test_a_declared_body_over_the_limit_is_refused_at_once(server):
    url, _, _ = server
    with connect(url) as sock:
        # 300 MB announced, nothing sent: the answer cannot have waited for the body.
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 314572800\r\n\r\n")
        status, body = read_response(sock)
    assert status == 413
    assert "request body: 314,572,800 bytes" in json.loads(body)["error"]
    assert "--max-body-mb" in json.loads(body)["error"]


def test_a_chunked_body_is_cut_off_as_it_passes_the_limit(server):
    url, _, _ = server
    chunk = b"x" * 16384
    sent = 0
    with connect(url) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        sock.settimeout(0.05)
        answer = b""
        while sent < 50 * 2**20 and not answer:      # at most 50 MB, stop at the answer
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
                answer = sock.recv(65536)
            except socket.timeout:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        sock.settimeout(5)
        try:
            answer += b"".join(iter(lambda: sock.recv(65536), b""))
        except (socket.timeout, ConnectionResetError):
            pass
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 2 * 2**20, f"the server read {sent:,} bytes before refusing"


def test_bodies_under_the_limit_are_answered(server):
    url, _, _ = server
    assert predict(url, ["a good phone"] * 100).status_code == 200


# --- 2. connections that send nothing, or too slowly, are closed; their number is bounded ---

def test_idle_and_slow_connections_are_closed_after_the_request_timeout(server):
    url, _, _ = server
    idle = connect(url)
    slow = connect(url)
    slow.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")      # headers never finish
    body_slow = connect(url)
    body_slow.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                      b"\r\nContent-Length: 100\r\n\r\n{\"texts\"")   # body never finishes
    started = time.monotonic()
    for sock in (idle, slow):
        with sock:
            assert closed_by_server(sock, within=6)
    with body_slow:
        status, body = read_response(body_slow)
    assert status == 408 and b"--request-timeout" in body
    assert 1.0 < time.monotonic() - started < 6
    assert httpx.get(f"{url}/v2/health/ready", timeout=5).status_code == 200


def test_a_slow_model_answer_is_not_taken_for_an_idle_connection(model_folder, tmp_path):
    """A request the model takes longer than --request-timeout to answer still gets its
    answer: only connections with no request being answered time out."""
    with thread_server(["--model", str(model_folder), "--no-log", "--request-timeout", "0.3",
                        "--threads", "1", "--precision", "fp32"]) as (url, app):
        engine = app.state.repository.current
        slow = SlowEngine(engine, seconds=1.0)
        app.state.batcher.replace(slow)
        response = predict(url, ["a good phone"])
    assert response.status_code == 200 and slow.calls == 1


class SlowEngine:
    def __init__(self, engine, seconds):
        self.engine, self.seconds, self.calls = engine, seconds, 0
        self.served = engine.served

    def probabilities(self, texts):
        self.calls += 1
        time.sleep(self.seconds)
        return self.engine.probabilities(texts)


def test_connections_over_the_limit_get_503_and_the_server_recovers(server):
    url, app, _ = server
    socks = [connect(url) for _ in range(12)]
    try:
        refused = []
        for sock in socks:
            sock.settimeout(0.5)
            try:
                data = sock.recv(4096)
            except socket.timeout:
                continue
            refused.append(data)
        assert len(refused) >= 4, "more connections than --max-connections 8 were held"
        assert all(r.startswith(b"HTTP/1.1 503") for r in refused if r)
        time.sleep(2.5)          # --request-timeout 1.5: the idle ones are closed
        assert httpx.get(f"{url}/v2/health/ready", timeout=5).status_code == 200
    finally:
        for sock in socks:
            sock.close()


# --- 3 and 6. ids are bounded; texts with nothing visible are refused ---

@pytest.mark.parametrize("path, body", [
    ("/predict", {"texts": ["fine"], "id": "x" * 257}),
    ("/v2/models/clf/infer", {"id": "x" * 257, "inputs": [
        {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["fine"]}]}),
])
def test_a_request_id_over_256_characters_is_refused_naming_it(server, path, body):
    url, _, logs = server
    before = sum(p.stat().st_size for p in logs.glob("*.jsonl"))
    response = httpx.post(url + path, json=body, timeout=30)
    assert response.status_code == 422
    assert response.json()["error"].startswith("id: ") and "256" in response.json()["error"]
    assert sum(p.stat().st_size for p in logs.glob("*.jsonl")) == before
    assert predict(url, ["fine"], id="x" * 256).status_code == 200


@pytest.mark.parametrize("text", ["\u200b", "\u0000", "\ufeff\u2060 \u200d", " \t\n", ""])
def test_texts_with_nothing_visible_are_refused_like_empty_ones(server, text):
    url, _, _ = server
    response = predict(url, ["fine", text])
    assert response.status_code == 422
    assert response.json()["error"].startswith("texts[1]: text is empty, whitespace or "
                                                "invisible characters only")


# --- 7. no API docs page loading a CDN; the schema only when asked ---

def test_docs_are_off_and_the_schema_only_with_openapi(server, model_folder):
    url, _, _ = server
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert httpx.get(url + path, timeout=5).status_code == 404
    with thread_server(["--model", str(model_folder), "--no-log", "--openapi",
                        "--threads", "1", "--precision", "fp32"]) as (other, _):
        schema = httpx.get(f"{other}/openapi.json", timeout=5)
        assert schema.status_code == 200 and "/predict" in schema.json()["paths"]
        assert httpx.get(f"{other}/docs", timeout=5).status_code == 404


# --- 9. metrics for Prometheus ---

def scrape(url: str) -> dict:
    """{(name, frozenset(labels)): value} of one GET /metrics."""
    response = httpx.get(f"{url}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples}


def test_metrics_count_requests_texts_labels_and_batches(model_folder, tmp_path):
    with thread_server(["--model", str(model_folder), "--log-dir", str(tmp_path),
                        "--threads", "1", "--precision", "fp32"]) as (url, app):
        answers = [predict(url, ["a good phone", "awful", "okay room"]) for _ in range(3)]
        assert predict(url, []).status_code == 422
        assert httpx.get(f"{url}/no/such/path", timeout=5).status_code == 404
        labels = [p["label"] for r in answers for p in r.json()["predictions"]]
        version = answers[0].json()["model_version"]
        metrics = scrape(url)

    def value(name, **labels):
        return metrics.get((name, frozenset(labels.items())), 0)

    assert value("textclf_requests_total", endpoint="/predict", status="200") == 3
    assert value("textclf_requests_total", endpoint="/predict", status="422") == 1
    assert value("textclf_requests_total", endpoint="other", status="404") == 1
    assert value("textclf_request_duration_seconds_count", endpoint="/predict") == 4
    assert value("textclf_texts_total") == 9
    for label in set(labels):
        assert value("textclf_predictions_total", label=label) == labels.count(label)
    assert value("textclf_batch_texts_count") >= 3 and value("textclf_batch_texts_sum") == 9
    assert value("textclf_queue_requests") == 0
    assert value("textclf_requests_in_flight") == 1          # the scrape itself
    assert value("textclf_open_connections") >= 1
    info = [key for key in metrics if key[0] == "textclf_model_info"]
    assert len(info) == 1 and ("version", version) in info[0][1]
    assert value("textclf_log_write_errors_total", log="predictions") == 0


# --- 10. a new model version without downtime ---

def swap_link(link: Path, target: Path) -> None:
    """Point `link` at `target` atomically (a new link renamed over the old one)."""
    tmp = link.with_name(link.name + ".new")
    tmp.symlink_to(target)
    os.replace(tmp, link)


def test_a_new_version_is_loaded_under_load_without_a_failed_request(tiny_model_dir,
                                                                      model_folder, tmp_path):
    second = build_model_folder(tiny_model_dir, tmp_path / "v2", steps=10)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "training_info.json").write_text("{not json")
    link = tmp_path / "served"
    link.symlink_to(model_folder)
    with thread_server(["--model", str(link), "--model-name", "clf", "--no-log",
                        "--threads", "1", "--precision", "fp32", "--max-wait-ms", "1"]) as (
            url, app):
        old = predict(url, ["a good phone"]).json()["model_version"]
        seen, failures, stop = [], [], threading.Event()

        def client():
            with httpx.Client(timeout=30) as http:
                while not stop.is_set():
                    r = http.post(f"{url}/predict", json={"texts": ["a good phone", "awful"]})
                    (seen if r.status_code == 200 else failures).append(
                        r.json().get("model_version") if r.status_code == 200 else r.text)

        clients = [threading.Thread(target=client) for _ in range(4)]
        for thread in clients:
            thread.start()
        time.sleep(0.5)
        swap_link(link, broken)
        refused = httpx.post(f"{url}/v2/repository/models/clf/load", timeout=60)
        time.sleep(0.3)
        swap_link(link, second)
        loaded = httpx.post(f"{url}/v2/repository/models/clf/load", timeout=60)
        time.sleep(0.5)
        stop.set()
        for thread in clients:
            thread.join()
        after = predict(url, ["a good phone"]).json()["model_version"]
        metadata = httpx.get(f"{url}/v2/models/clf", timeout=5).json()
        unknown = httpx.post(f"{url}/v2/repository/models/other/load", timeout=5)
    assert refused.status_code == 409
    assert f"still serving {old}" in refused.json()["error"] and str(broken) in (
        refused.json()["error"].replace(str(link), str(broken)))
    assert loaded.status_code == 200 and loaded.json()["model_version"] != old
    new = loaded.json()["model_version"]
    assert after == new and metadata["versions"] == [new]
    assert failures == [] and len(seen) > 20
    assert set(seen) == {old, new}
    first_new = seen.index(new)
    assert old not in seen[first_new + 8:], "an old answer long after the switch"
    assert unknown.status_code == 404


# --- 4. the prediction log never keeps half a line ---

LINES = log_lines(dt.datetime(2026, 12, 4, 12, tzinfo=dt.timezone.utc), "r", "v1", ["text"],
                  [{"label": "x", "probability": 0.5, "probabilities": {"x": 0.5}}])

WRITER = r"""
import datetime as dt, json, resource, signal, sys
from pathlib import Path
from textclf.serving.log import PredictionLog
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)       # EFBIG instead of a killed process
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
log = PredictionLog(Path(sys.argv[1]), warn=lambda m: print("warn:", m, flush=True))
lines = sys.argv[3].encode()
for i in range(5):
    try:
        log.append(dt.datetime(2026, 12, 4, 12, tzinfo=dt.timezone.utc), lines)
        print("ok", i, flush=True)
    except OSError as err:
        print("failed", i, err.errno, flush=True)
"""


def test_a_write_cut_short_by_a_full_disk_leaves_no_partial_line(tmp_path):
    """A file-size limit stands in for a full disk (the review saw the half line with one):
    the third request's write is cut part-way; the file keeps two whole lines."""
    limit = len(LINES) * 2 + len(LINES) // 2
    out = subprocess.run([sys.executable, "-c", WRITER, str(tmp_path), str(limit),
                          LINES.decode()], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == ["ok 0", "ok 1", "failed 2 27"]
    content = (tmp_path / log_file_name(dt.date(2026, 12, 4), 0)).read_bytes()
    assert content == LINES * 2


def test_a_log_ending_in_a_partial_line_is_left_and_the_day_goes_on_in_the_next_file(
        tmp_path):
    day = dt.datetime(2026, 12, 4, 12, tzinfo=dt.timezone.utc)
    first = tmp_path / log_file_name(day.date(), 0)
    first.write_bytes(LINES + LINES[:20])          # what a crashed writer left
    warnings = []
    log = PredictionLog(tmp_path, warn=warnings.append)
    assert log.append(day, LINES).name == log_file_name(day.date(), 1)
    assert log.append(day, LINES).name == log_file_name(day.date(), 1)
    assert first.read_bytes() == LINES + LINES[:20]       # never glued to the half line
    assert len(warnings) == 1 and "partial line" in warnings[0] and str(first) in warnings[0]


def test_a_log_folder_deleted_while_serving_is_made_again(tmp_path):
    day = dt.datetime(2026, 12, 4, 12, tzinfo=dt.timezone.utc)
    warnings = []
    log = PredictionLog(tmp_path / "logs", warn=warnings.append)
    log.append(day, LINES)
    shutil.rmtree(tmp_path / "logs")
    path = log.append(day, LINES)
    assert path.read_bytes() == LINES and len(warnings) == 1 and "gone" in warnings[0]


# --- 2 (the log side). descriptors running out do not flood stderr ---

@pytest.mark.slow
def test_running_out_of_descriptors_says_so_once_not_a_traceback_a_second(model_folder,
                                                                           tmp_path):
    """A `ulimit -n` of 96 and --max-connections 1000: the guard cannot save the server,
    so accept() fails with EMFILE; stderr gets one line, and the server answers again once
    the clients go. (asyncio's loop: uvloop, `--loop uvloop`, says nothing at all.)"""
    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (96, 96))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    from serve_harness import TEXTCLF, free_port, wait_ready

    port = free_port()
    proc = subprocess.Popen([TEXTCLF, "serve", "--model", str(model_folder), "--no-log",
                             "--port", str(port), "--threads", "1", "--precision", "fp32",
                             "--max-connections", "1000", "--request-timeout", "3",
                             "--loop", "asyncio"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, preexec_fn=low_limit)
    url = f"http://127.0.0.1:{port}"
    socks = []
    try:
        wait_ready(url, timeout=90, proc=proc)
        for _ in range(200):
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(4)                          # accept retries once a second meanwhile
        for sock in socks:
            sock.close()
        socks.clear()
        time.sleep(4)                          # the timed-out ones are gone
        assert httpx.get(f"{url}/v2/health/ready", timeout=10).status_code == 200
    finally:
        for sock in socks:
            sock.close()
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0]
    accept_lines = [line for line in output.splitlines() if "accept" in line]
    assert 1 <= len(accept_lines) <= 3, output[-3000:]
    assert "Traceback" not in output and len(output) < 20_000
    assert "raise `ulimit -n`" in accept_lines[0]


@pytest.mark.slow
def test_sighup_loads_the_new_version_in_a_running_server(tiny_model_dir, model_folder,
                                                          tmp_path):
    second = build_model_folder(tiny_model_dir, tmp_path / "v2", steps=10)
    link = tmp_path / "served"
    link.symlink_to(model_folder)
    with process_server(["--model", str(link), "--no-log", "--precision", "fp32"],
                        cwd=tmp_path) as (url, proc):
        old = predict(url, ["a good phone"]).json()["model_version"]
        swap_link(link, second)
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            new = predict(url, ["a good phone"]).json()["model_version"]
            if new != old:
                break
            time.sleep(0.2)
        assert proc.poll() is None
    assert new != old and new.startswith("sha256:")


# --- a batch in length-sorted passes --------------------------------------------------------

def test_a_batch_runs_in_passes_of_pass_size_16_on_a_cpu_unless_told(monkeypatch):
    import torch

    from textclf import serve
    from textclf.model import precision

    def passes(*flags: str) -> int:
        return serve.pass_size(serve.parse_args(list(flags)))

    monkeypatch.setattr(precision, "choose_device", lambda: torch.device("cpu"))
    assert passes() == 16 and passes("--max-batch-size", "8") == 8
    assert passes("--pass-size", "32") == 32 and passes("--pass-size", "128") == 64
    monkeypatch.setattr(precision, "choose_device", lambda: torch.device("cuda"))
    assert passes() == 64 and passes("--pass-size", "4") == 4


def test_passes_give_the_answers_of_one_padded_pass(model_folder):
    """Sorting a batch into passes changes padding, not answers: the probabilities come
    back in the texts' order and equal one pass's to float precision."""
    import numpy as np

    from textclf.model.labeller import Labeller

    texts = [" ".join(["word"] * n) + f" {n}" for n in (40, 2, 17, 1, 33, 5, 9, 26, 3)]
    one_pass = Labeller.load(model_folder, "fp32", batch_size=64).probabilities(texts)
    passes = Labeller.load(model_folder, "fp32", batch_size=2).probabilities(texts)
    assert np.allclose(one_pass, passes, atol=1e-5)
    assert (one_pass.argmax(1) == passes.argmax(1)).all()


@pytest.mark.slow
def test_a_request_still_waiting_when_the_grace_period_ends_gets_a_json_503(model_folder,
                                                                            tmp_path):
    """SIGTERM with a request held longer than --grace-seconds (a 20 s batching wait):
    uvicorn cancels it; the client gets JSON 503, not a plain-text 500, and the server's
    output has no traceback."""
    from serve_harness import json_response, send_json

    with process_server(["--model", str(model_folder), "--no-log", "--precision", "fp32",
                         "--max-wait-ms", "20000", "--grace-seconds", "1"],
                        tmp_path) as (url, proc):
        waiting = send_json(url, "/predict", {"texts": ["held"]})
        time.sleep(1.0)                  # read by now, waiting for its batch
        proc.send_signal(signal.SIGTERM)
        status, body = json_response(waiting)
        code = proc.wait(timeout=60)
        output = proc.stdout.read()
    assert code in (0, -signal.SIGTERM), output       # uvicorn re-raises the signal it caught
    assert status == 503, body
    assert body["error"].startswith("the server is shutting down and stopped waiting")
    assert "Traceback" not in output and "Exception in ASGI application" not in output, output
