"""`textclf serve --workers N`: worker processes behind one port that share the prediction
log, labels, metrics and model reloads; a killed worker replaced; SIGTERM finishing every
worker's requests; and the log written by several processes at once.

Servers bind 127.0.0.1 on a free port; clients are real HTTP (httpx), each request on a
connection of its own so that the kernel hands them to either worker."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import signal
import subprocess
import sys
import time
import uuid

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serve_harness import (TEXTCLF, build_model_folder, json_response, process_server,
                           send_json)
from textclf.monitoring.answers import logged_requests, read_feedback
from textclf.serving.feedback import AnsweredRequests
from textclf.serving.log import FIELDS, PredictionLog, log_lines

WORKERS = ["--workers", "2", "--precision", "fp32", "--max-wait-ms", "2"]


@pytest.fixture(scope="module")
def model_folder(tiny_model_dir, tmp_path_factory):
    return build_model_folder(tiny_model_dir, tmp_path_factory.mktemp("served") / "clf")


@pytest.fixture(scope="module")
def workers(model_folder, tmp_path_factory):
    """(url, parent process, log folder, model link): two workers on one port."""
    base = tmp_path_factory.mktemp("workers")
    link = base / "served"
    link.symlink_to(model_folder)
    logs = base / "logs"
    with process_server(["--model", str(link), "--model-name", "clf", "--log-dir", str(logs),
                         *WORKERS], cwd=base) as (url, proc):
        yield url, proc, logs, link


def worker_pids(parent: subprocess.Popen) -> list[int]:
    """The server's live worker processes (uvicorn spawns them; multiprocessing's
    resource tracker is a child too)."""
    pids = []
    for child in psutil.Process(parent.pid).children():
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                pids.append(child.pid)
        except psutil.Error:            # gone, or a zombie not yet reaped
            pass
    return pids


async def _each_on_its_own_connection(url: str, calls: list[tuple[str, dict]],
                                      at_once: int = 16) -> list[httpx.Response]:
    limits = httpx.Limits(max_keepalive_connections=0, max_connections=at_once)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        return await asyncio.gather(*(client.post(path, json=body) for path, body in calls))


def post_all(url: str, calls: list[tuple[str, dict]]) -> list[httpx.Response]:
    return asyncio.run(_each_on_its_own_connection(url, calls))


def scrape(url: str) -> dict:
    """{(name, frozenset(labels)): value} of one GET /metrics."""
    response = httpx.get(f"{url}/metrics", headers={"connection": "close"}, timeout=10)
    assert response.status_code == 200
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples}


def predicted_200(metrics: dict) -> float:
    return metrics.get(("textclf_requests_total",
                        frozenset({"endpoint": "/predict", "status": "200"}.items())), 0)


@pytest.mark.slow
def test_two_workers_serve_one_port_and_ready_means_both(workers):
    url, proc, _, _ = workers
    assert len(worker_pids(proc)) == 2
    assert httpx.get(f"{url}/v2/health/ready", timeout=10).json() == {"ready": True}
    responses = post_all(url, [("/predict", {"texts": ["a good phone"]})] * 40)
    assert [r.status_code for r in responses] == [200] * 40
    assert len({r.json()["predictions"][0]["probability"] for r in responses}) == 1


@pytest.mark.slow
def test_every_answered_request_is_logged_once_and_whole(workers):
    url, _, logs, _ = workers
    sizes = {f"log-{i}-{uuid.uuid4().hex[:6]}": 1 + i % 3 for i in range(90)}
    calls = [("/predict", {"id": request_id, "texts": [f"text {k} of {request_id} was good"
                                                       for k in range(n)]})
             for request_id, n in sizes.items()]
    assert {r.status_code for r in post_all(url, calls)} == {200}
    lines = [json.loads(line) for path in sorted(logs.glob("predictions-*.jsonl"))
             for line in path.read_text(encoding="utf-8").splitlines()]
    assert all(tuple(line) == FIELDS for line in lines)
    mine = [line["request_id"] for line in lines if line["request_id"] in sizes]
    assert sorted(mine) == sorted(i for i, n in sizes.items() for _ in range(n))
    # Each request's lines are consecutive (one write): as many runs as requests.
    runs = [i for k, i in enumerate(mine) if k == 0 or mine[k - 1] != i]
    assert sorted(runs) == sorted(sizes)
    # The log readers (`feedback import`, the drift and live reports) read it as one log.
    found = logged_requests(logs, set(sizes))
    assert {i: [len(request) for request in found[i]] for i in found} == {
        i: [n] for i, n in sizes.items()}
    assert all(found[i][0][k].text == f"text {k} of {i} was good"
               for i in sizes for k in range(sizes[i]))
    answered = AnsweredRequests.from_log(logs)
    assert all(answered.texts(i) == n for i, n in sizes.items())


@pytest.mark.slow
def test_a_label_for_a_request_another_worker_answered_is_accepted(workers):
    url, _, logs, _ = workers
    answers = post_all(url, [("/predict", {"texts": ["okay room", "awful"]})] * 20)
    ids = [r.json()["id"] for r in answers]
    # A request no worker of this server answered: another process appends it to the log.
    elsewhere = f"elsewhere-{uuid.uuid4().hex}"
    now = dt.datetime.now(dt.timezone.utc)
    PredictionLog(logs).append(now, log_lines(now, elsewhere, "v0", ["t1", "t2"], [
        {"label": "neutral", "probability": 0.5, "probabilities": {"neutral": 0.5}}] * 2))
    before = scrape(url).get(("textclf_feedback_labels_total", frozenset()), 0)
    labels = [{"request_id": i, "index": 1, "label": "negative"} for i in ids]
    labels += [{"request_id": elsewhere, "index": k % 2, "label": "neutral"} for k in range(6)]
    responses = post_all(url, [("/feedback", label) for label in labels])
    assert [r.status_code for r in responses] == [200] * len(labels), [
        r.text for r in responses if r.status_code != 200]
    after = scrape(url).get(("textclf_feedback_labels_total", frozenset()), 0)
    assert after - before == len(labels)
    logged = [(f.request_id, f.index) for f in read_feedback(logs)]
    assert all((i, 1) in logged for i in ids) and (elsewhere, 0) in logged
    unknown = post_all(url, [("/feedback", {"request_id": "never-answered", "index": 0,
                                            "label": "neutral"})])[0]
    assert unknown.status_code == 404 and "never-answered" in unknown.json()["error"]


@pytest.mark.slow
def test_metrics_sum_over_the_workers(workers):
    url, _, _, _ = workers
    before = predicted_200(scrape(url))
    post_all(url, [("/predict", {"texts": ["good nice", "superb"]})] * 30)
    scrapes = [scrape(url) for _ in range(6)]           # fresh connections: either worker
    assert {predicted_200(m) - before for m in scrapes} == {30}
    metrics = scrapes[-1]
    info = [(dict(key[1]), value) for key, value in metrics.items()
            if key[0] == "textclf_model_info"]
    assert [value for _, value in info] == [1.0] and info[0][0]["name"] == "clf"
    assert metrics[("textclf_requests_in_flight", frozenset())] == 1     # the scrape
    assert metrics[("textclf_queue_requests", frozenset())] == 0
    assert metrics[("textclf_texts_total", frozenset())] >= 60


def swap_link(link, target) -> None:
    tmp = link.with_name(link.name + ".new")
    tmp.symlink_to(target)
    tmp.replace(link)


@pytest.mark.slow
def test_a_version_loaded_through_one_worker_reaches_every_worker(workers, tiny_model_dir,
                                                                  tmp_path):
    """Last in this file: the server answers with another model afterwards."""
    url, _, _, link = workers
    old = httpx.post(f"{url}/predict", json={"texts": ["good"]}, timeout=30).json()
    second = build_model_folder(tiny_model_dir, tmp_path / "v2", steps=10)
    swap_link(link, second)
    loaded = httpx.post(f"{url}/v2/repository/models/clf/load", timeout=120)
    assert loaded.status_code == 200, loaded.text
    new = loaded.json()["model_version"]
    assert new != old["model_version"]
    # Every worker has switched when the old version's info gauge reads 0: it is the
    # largest value among the live workers.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        live = model_info(scrape(url))
        if live == {old["model_version"]: 0.0, new: 1.0}:
            break
        time.sleep(0.5)
    assert live == {old["model_version"]: 0.0, new: 1.0}
    versions = {r.json()["model_version"]
                for r in post_all(url, [("/predict", {"texts": ["good"]})] * 20)}
    assert versions == {new}


def model_info(metrics: dict) -> dict:
    """version -> value of textclf_model_info."""
    return {dict(key[1])["version"]: value for key, value in metrics.items()
            if key[0] == "textclf_model_info"}


@pytest.mark.slow
def test_sigterm_lets_every_worker_finish_its_requests(model_folder, tmp_path):
    logs = tmp_path / "logs"
    # A long batching wait keeps requests in flight while SIGTERM arrives.
    with process_server(["--model", str(model_folder), "--log-dir", str(logs),
                         "--workers", "2", "--precision", "fp32", "--max-wait-ms", "4000"],
                        tmp_path) as (url, proc):
        requests = [send_json(url, "/predict", {"texts": [f"in flight {i}"]})
                    for i in range(6)]
        time.sleep(1.5)                  # read by now; answered only after the 4 s wait
        proc.send_signal(signal.SIGTERM)
        # While the workers finish those, a new client is answered or refused, never
        # queued on a socket no worker accepts from any more and reset later.
        probes = []
        while proc.poll() is None and "refused" not in probes:
            try:
                probe = send_json(url, "/v2/health/live", {})
            except ConnectionRefusedError:
                probes.append("refused")
                break
            try:
                probes.append(json_response(probe)[0])
            except (ConnectionError, AssertionError) as err:   # reset, or closed unanswered
                probes.append(repr(err))
            time.sleep(0.05)
        answers = [json_response(sock) for sock in requests]
        assert proc.wait(timeout=60) == 0
        output = proc.stdout.read()
    assert probes[-1] == "refused" and set(probes) <= {200, 405, "refused"}, probes
    assert [status for status, _ in answers] == [200] * 6
    assert output.count("Finished server process") >= 2, output[-3000:]
    logged = sorted(json.loads(line)["text"] for path in logs.glob("predictions-*.jsonl")
                    for line in path.read_text().splitlines())
    assert logged == [f"in flight {i}" for i in range(6)]


@pytest.mark.long   # up to 90 s: a worker killed while uvicorn pings it is seen only when
                    # the ping times out (serving.workers.START_SECONDS, 60 s)
def test_a_killed_worker_is_replaced(model_folder, tmp_path):
    with process_server(["--model", str(model_folder), "--no-log", "--workers", "2",
                         "--precision", "fp32"], tmp_path) as (url, proc):
        killed = worker_pids(proc)[0]
        psutil.Process(killed).kill()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            pids = worker_pids(proc)
            if len(pids) == 2 and killed not in pids and httpx.get(
                    f"{url}/v2/health/ready", timeout=10).status_code == 200:
                break
            time.sleep(0.2)
        assert len(pids) == 2 and killed not in pids
        status = httpx.post(f"{url}/predict", json={"texts": ["good"]}, timeout=30)
        assert status.status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        output = proc.stdout.read()
    assert f"Child process [{killed}] died" in output


@pytest.mark.slow
# Failed once in three fresh-clone CI runs (2026-12-05) before connections drained: a
# connection the retired worker had accepted, its request not yet read, was closed
# unanswered (test_serve.py::test_a_request_on_its_way_when_the_server_stops_is_answered...).
def test_sighup_replaces_the_workers_one_at_a_time_with_the_folder_as_it_is_now(
        tiny_model_dir, model_folder, tmp_path):
    """uvicorn's rolling restart: a new worker starts and is ready before an old one
    stops, so the server stays ready and every request is answered."""
    second = build_model_folder(tiny_model_dir, tmp_path / "v2", steps=10)
    link = tmp_path / "served"
    link.symlink_to(model_folder)
    with process_server(["--model", str(link), "--model-name", "clf", "--no-log",
                         *WORKERS], tmp_path) as (url, proc):
        before = set(worker_pids(proc))
        old = httpx.post(f"{url}/predict", json={"texts": ["good"]}, timeout=30).json()
        swap_link(link, second)
        proc.send_signal(signal.SIGHUP)
        statuses, versions = set(), set()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not before.isdisjoint(worker_pids(proc)):
            for response in post_all(url, [("/predict", {"texts": ["good"]})] * 4):
                statuses.add(response.status_code)
                versions.add(response.json().get("model_version"))
        assert before.isdisjoint(worker_pids(proc)), "the old workers still run"
        after = {r.json()["model_version"]
                 for r in post_all(url, [("/predict", {"texts": ["good"]})] * 12)}
    assert statuses == {200}                        # ready throughout: none refused
    assert len(after) == 1 and after != {old["model_version"]}
    assert versions <= {old["model_version"]} | after


@pytest.mark.slow
def test_a_folder_that_is_no_model_stops_the_parent_before_any_worker(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "training_info.json").write_text("{not json")
    result = subprocess.run([TEXTCLF, "serve", "--model", str(broken), "--no-log",
                             "--workers", "2", "--port", "0"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines() == [
        f"error: {broken}: no config.json; expected a model folder written by `textclf "
        f"train` or a Hugging Face classification model"]


@pytest.mark.long   # up to a minute: uvicorn may wait out its health check of a dying worker
def test_workers_whose_model_does_not_load_stop_the_server_with_exit_2(model_folder,
                                                                        tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(model_folder, damaged)
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])          # the config still reads
    started = time.monotonic()
    result = subprocess.run([TEXTCLF, "serve", "--model", str(damaged), "--no-log",
                             "--workers", "2", "--port", "0"],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the workers could not start: ") and str(damaged) in last
    assert "cannot load the model weights" in last
    assert time.monotonic() - started < 150


def test_a_replacement_that_fails_after_the_server_was_up_does_not_fail_the_exit(tmp_path):
    """A SIGHUP whose new worker cannot load the folder: uvicorn keeps the old workers;
    stopping the server later exits 0 (it said 2, 'the workers could not start'). A
    worker failing before all were ready stops the server with exit 2, as before."""
    from textclf.serving.workers import WorkerGroup

    first = WorkerGroup(tmp_path / "first", workers=2)
    first.folder.mkdir()
    first.startup_failed("m: cannot load its config")      # no worker ready yet
    assert first.startup_error() == "m: cannot load its config"
    up = WorkerGroup(tmp_path / "up", workers=1)
    up.folder.mkdir()
    up.joined()                                             # all (one) ready: served
    up.startup_failed("m: cannot load its config")
    assert up.startup_error() is None
    assert up.replacement_error() == "m: cannot load its config"


# --- quick: flags, threads, and the log under several writers --------------------------

@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5", "100000"])
def test_workers_flag_is_a_whole_number_in_range(value, capsys):
    from textclf import serve

    with pytest.raises(SystemExit) as exit_:
        serve.parse_args(["--workers", value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("textclf serve: error: argument --workers: expected a whole number")


@pytest.mark.parametrize("cores, workers, threads", [(2, 1, 1), (2, 2, 1), (8, 1, 7),
                                                      (8, 2, 4), (8, 3, 2), (8, 16, 1)])
def test_each_worker_gets_its_share_of_the_cores(monkeypatch, cores, workers, threads):
    from textclf import serve

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(serve, "available_cores", lambda: cores)
    assert serve.parse_args(["--workers", str(workers)]).threads == threads
    assert serve.parse_args(["--workers", str(workers), "--threads", "3"]).threads == 3


WRITER = r"""
import datetime as dt, random, sys
from pathlib import Path
from textclf.serving.log import PredictionLog, log_lines
log = PredictionLog(Path(sys.argv[1]), max_bytes=200_000)
rng = random.Random(sys.argv[2])
for i in range(150):
    n = rng.randint(1, 4)
    texts = [f"{sys.argv[2]}-{i}-{k} " + "x" * rng.randint(10, 30_000) for k in range(n)]
    answers = [{"label": "a", "probability": 1.0, "probabilities": {"a": 1.0}}] * n
    now = dt.datetime.now(dt.timezone.utc)
    log.append(now, log_lines(now, f"{sys.argv[2]}-{i}", "v", texts, answers))
"""


def test_processes_appending_to_one_log_keep_each_request_whole_and_once(tmp_path):
    """What --workers relies on: four writers at once, requests up to 120 KB (larger than
    a pipe's atomic write), files rolling over at 200 KB."""
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), f"w{w}"])
               for w in range(4)]
    assert [writer.wait(timeout=120) for writer in writers] == [0] * 4
    files = sorted(tmp_path.glob("predictions-*.jsonl"))
    assert len(files) > 5                                    # it rolled over
    requests: list[list[str]] = []
    for path in files:
        data = path.read_bytes()
        assert data.endswith(b"\n")
        for line in data.decode().splitlines():
            record = json.loads(line)
            if not requests or requests[-1][0].rsplit("-", 1)[0] != record["request_id"]:
                requests.append([])
            requests[-1].append(record["text"].split(" ")[0])
    ids = [request[0].rsplit("-", 1)[0] for request in requests]
    assert sorted(ids) == sorted(f"w{w}-{i}" for w in range(4) for i in range(150))
    assert all(request == [f"{ids[k]}-{j}" for j in range(len(request))]
               for k, request in enumerate(requests))


def test_labels_follow_requests_another_process_logged(tmp_path):
    now = dt.datetime.now(dt.timezone.utc)
    answers = [{"label": "a", "probability": 1.0, "probabilities": {"a": 1.0}}] * 3
    PredictionLog(tmp_path).append(now, log_lines(now, "before", "v", ["a"], answers[:1]))
    answered = AnsweredRequests.from_log(tmp_path)
    PredictionLog(tmp_path).append(now, log_lines(now, "after", "v", ["a", "b", "c"],
                                                  answers))
    assert (answered.texts("before"), answered.texts("after")) == (1, None)
    asyncio.run(answered.catch_up())
    assert (answered.texts("before"), answered.texts("after")) == (1, 3)
    asyncio.run(answered.catch_up())                     # read once: nothing new
    assert len(answered) == 2
