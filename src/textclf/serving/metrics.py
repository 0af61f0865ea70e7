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
"""

from __future__ import annotations

import time

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge,
                               Histogram, Info, generate_latest)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.routing import Match

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServeMetrics:
    """The server's metrics and the calls that update them."""

    def __init__(self):
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
        self.queue = Gauge("textclf_queue_requests", "Requests waiting for a batch",
                           registry=registry)
        self.in_flight = Gauge("textclf_requests_in_flight", "Requests being answered",
                               registry=registry)
        self.texts = Counter("textclf_texts", "Texts classified", registry=registry)
        self.predicted = Counter("textclf_predictions", "Texts by predicted label", ["label"],
                                 registry=registry)
        self.feedback = Counter("textclf_feedback_labels", "Labels accepted by POST /feedback",
                                registry=registry)
        self.log_errors = Counter("textclf_log_write_errors", "Log writes that failed",
                                  ["log"], registry=registry)
        self.loads = Counter("textclf_model_loads", "Model (re)loads", ["result"],
                             registry=registry)
        self.model = Info("textclf_model", "The model answering", registry=registry)

    def watch(self, batcher, guard=None) -> None:
        """Read when scraped: the batcher's queue, the guard's connections and counts."""
        self.queue.set_function(lambda: batcher.queued)
        if guard is not None:
            self.registry.register(_GuardCollector(guard))

    def on_batch(self, texts: int, seconds: float) -> None:
        self.batch_texts.observe(texts)
        self.batch_seconds.observe(seconds)

    def answered(self, labels: list[str]) -> None:
        self.texts.inc(len(labels))
        for label in labels:
            self.predicted.labels(label).inc()

    def serving(self, name: str, version: str, precision: str, labels: tuple[str, ...]):
        self.model.info({"name": name, "version": version, "precision": precision,
                         "labels": ",".join(labels)})

    def scrape(self) -> tuple[bytes, str]:
        """(body, content type) of GET /metrics."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _GuardCollector:
    """The ConnectionGuard's own counts, read at scrape time (prometheus-client's custom
    collector interface: `collect` yields metric families)."""

    def __init__(self, guard):
        self.guard = guard

    def collect(self):
        yield GaugeMetricFamily("textclf_open_connections", "Client connections open",
                                value=len(self.guard.open))
        yield CounterMetricFamily("textclf_refused_connections",
                                  "Connections refused over --max-connections (503)",
                                  value=self.guard.refused)
        yield CounterMetricFamily("textclf_timed_out_connections",
                                  "Connections closed by --request-timeout",
                                  value=self.guard.timed_out)


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
