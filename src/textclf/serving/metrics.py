"""Prometheus metrics of `textclf serve`, scraped at `GET /metrics` (prometheus-client's text
format, what a Prometheus `scrape_config` or KServe's metrics aggregation reads).

    textclf_requests_total{endpoint,status}        requests answered (endpoint: the route's
                                                   path, e.g. /v2/models/{name}/infer)
    textclf_request_duration_seconds{endpoint}     latency histogram, headers in to answer out
    textclf_batch_texts                            histogram of texts per forward pass
    textclf_batch_duration_seconds                 histogram of forward-pass time
    textclf_queue_requests                         requests waiting for a batch, now
    textclf_requests_in_flight                     requests being answered, now
    textclf_open_connections                       client connections open, now
    textclf_refused_connections_total              connections over --max-connections (503)
    textclf_timed_out_connections_total            connections closed by --request-timeout
    textclf_texts_total                            texts classified
    textclf_predictions_total{label}               texts by predicted label: a cheap live
                                                   drift signal (compare the shares over time)
    textclf_feedback_labels_total                  labels accepted by POST /feedback
    textclf_log_write_errors_total{log}            prediction/feedback log writes that failed
    textclf_model_loads_total{result}              model (re)loads: ok or failed
    textclf_model_info{name,version,precision,labels}   the model answering (value 1)

Each server has a registry of its own (not prometheus-client's global one), so two apps
in one process (the tests) do not share counts. Label values are bounded: endpoints are
route paths (an unknown path is `other`), labels are the model's classes.

With `serve --workers N`, every scrape answers for all the workers, whichever one takes
it: prometheus-client's multiprocess mode (each process writes its values to files in
the folder PROMETHEUS_MULTIPROC_DIR names, which the parent process makes and removes, and
a scrape sums them). Counters and histograms sum over every worker that ran, restarted
ones included; the gauges (queue, in flight, connections) sum the live workers; and
`textclf_model_info` is a gauge there (info metrics do not work in multiprocess mode): 1
for each version a worker answers with, 0 for one none answers with any more. The queue
and connection figures are read from the batcher and the connection guard when scraped
(`sample`), and every second in each worker, so another worker's are at most a second old.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Optional

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge,
                               Histogram, Info, generate_latest, multiprocess)
from starlette.routing import Match

from textclf.serving.workers import process_alive

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServeMetrics:
    """The server's metrics and the calls that update them. `shared`: the multiprocess
    folder (PROMETHEUS_MULTIPROC_DIR, set before prometheus-client was imported) of a
    worker process, whose scrapes sum every worker's values."""

    def __init__(self, shared: Optional[Path] = None):
        self.shared = shared
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("textclf_requests", "HTTP requests answered",
                                ["endpoint", "status"], registry=registry)
        self.latency = Histogram("textclf_request_duration_seconds", "Request latency",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=registry)
        self.batch_texts = Histogram("textclf_batch_texts", "Texts per forward pass",
                                     buckets=BATCH_BUCKETS, registry=registry)
        self.batch_seconds = Histogram("textclf_batch_duration_seconds",
                                       "Forward-pass time", buckets=LATENCY_BUCKETS,
                                       registry=registry)
        # "livesum": summed over the live workers (ignored by a single process).
        self.queue = Gauge("textclf_queue_requests", "Requests waiting for a batch",
                           registry=registry, multiprocess_mode="livesum")
        self.in_flight = Gauge("textclf_requests_in_flight", "Requests being answered",
                               registry=registry, multiprocess_mode="livesum")
        self.open_connections = Gauge("textclf_open_connections", "Client connections open",
                                      registry=registry, multiprocess_mode="livesum")
        self.refused = Counter("textclf_refused_connections",
                               "Connections refused over --max-connections (503)",
                               registry=registry)
        self.timed_out = Counter("textclf_timed_out_connections",
                                 "Connections closed by --request-timeout", registry=registry)
        self.texts = Counter("textclf_texts", "Texts classified", registry=registry)
        self.predicted = Counter("textclf_predictions", "Texts by predicted label", ["label"],
                                 registry=registry)
        self.feedback = Counter("textclf_feedback_labels", "Labels accepted by POST /feedback",
                                registry=registry)
        self.log_errors = Counter("textclf_log_write_errors", "Log writes that failed",
                                  ["log"], registry=registry)
        self.loads = Counter("textclf_model_loads", "Model (re)loads", ["result"],
                             registry=registry)
        if shared is None:
            self.model = Info("textclf_model", "The model answering", registry=registry)
        else:
            self.model = Gauge("textclf_model_info", "The model answering",
                               ["name", "version", "precision", "labels"], registry=registry,
                               multiprocess_mode="livemax")
        self._model_labels: Optional[dict] = None
        self._batcher = self._guard = None
        self._counted = {"refused": 0, "timed_out": 0}    # the guard's counts, as counted

    def watch(self, batcher, guard=None) -> None:
        """Read by `sample`: the batcher's queue, the guard's connections and counts."""
        self._batcher, self._guard = batcher, guard

    def sample(self) -> None:
        """Copy the batcher's queue and the guard's connections and counts into the
        metrics (at each scrape; every second in a worker process)."""
        if self._batcher is not None:
            self.queue.set(self._batcher.queued)
        if self._guard is not None:
            self.open_connections.set(len(self._guard.open))
            for name, counter in (("refused", self.refused), ("timed_out", self.timed_out)):
                now = getattr(self._guard, name)
                counter.inc(now - self._counted[name])
                self._counted[name] = now

    def on_batch(self, texts: int, seconds: float) -> None:
        self.batch_texts.observe(texts)
        self.batch_seconds.observe(seconds)

    def answered(self, labels: list[str]) -> None:
        self.texts.inc(len(labels))
        for label in labels:
            self.predicted.labels(label).inc()

    def serving(self, name: str, version: str, precision: str, labels: tuple[str, ...]):
        model = {"name": name, "version": version, "precision": precision,
                 "labels": ",".join(labels)}
        if self.shared is None:
            self.model.info(model)
            return
        if self._model_labels is not None and self._model_labels != model:
            self.model.labels(**self._model_labels).set(0)
        self.model.labels(**model).set(1)
        self._model_labels = model

    def scrape(self) -> tuple[bytes, str]:
        """(body, content type) of GET /metrics: this process's, or every worker's."""
        self.sample()
        if self.shared is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        forget_dead_workers(self.shared)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(self.shared))
        return generate_latest(registry), CONTENT_TYPE_LATEST

    def leave(self) -> None:
        """A worker stopping: its live gauges stop counting (counters stay in the sums)."""
        if self.shared is not None:
            multiprocess.mark_process_dead(os.getpid(), str(self.shared))


_LIVE_FILE = re.compile(r"gauge_live\w+_(\d+)\.db")


def forget_dead_workers(shared: Path) -> None:
    """Drop the live gauges of worker processes that died without `leave` (killed): else
    their last queue and in-flight figures would stay in the sums."""
    for path in shared.glob("gauge_live*.db"):
        found = _LIVE_FILE.fullmatch(path.name)
        if found and not process_alive(int(found.group(1))):
            multiprocess.mark_process_dead(int(found.group(1)), str(shared))


def count_requests(app, metrics: ServeMetrics, routes):
    """ASGI middleware: each HTTP request's endpoint, status and latency into `metrics`.
    `routes`: the app's routes, matched to name the endpoint by its path template."""

    def endpoint(scope) -> str:
        for route in routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return route.path
        return "other"

    async def middleware(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        started = time.perf_counter()
        status = {"code": 500}

        async def send_status(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        metrics.in_flight.inc()
        try:
            await app(scope, receive, send_status)
        finally:
            metrics.in_flight.dec()
            name = endpoint(scope)
            metrics.requests.labels(name, str(status["code"])).inc()
            metrics.latency.labels(name).observe(time.perf_counter() - started)

    return middleware
