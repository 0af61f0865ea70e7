"""Load test of `textclf serve`: dynamic batching against batching off, one worker
process against several, and `predict`.

The servers of `--modes` (four by default) run side by side on 127.0.0.1 (only the one
under test gets traffic):
batching on (the defaults: up to 64 texts, 5 ms wait, each batch length-sorted into
passes of 16 texts on a CPU), batching without the wait (`--max-wait-ms 0`: a batch is what
queued up during the previous forward pass), the same in one pass padded to its longest
text (`--pass-size 64`, the design before passes) and batching off (`--max-batch-size 1`).
N concurrent clients (1, 8, 32) each send single texts to
`POST /v2/models/{name}/infer`, one after another, until `--requests` are answered;
contenders alternate within each round. Prints throughput (requests/s) and p50/p99
latency, median (range) over rounds, and two ceilings, model already loaded, in this
process: `textclf predict`'s core (`predict.label_texts`, batch 64) on the same texts,
which sorts the whole input by length first (little padding), and the same engine on the
texts in arrival order, N at a time (N = the most clients), which is what a server's
batch holds when N clients each wait for their answer: the most a server can reach.
`predict`'s ceiling is measured twice: with the one-worker servers' model threads
(`--threads`, serve's default) and with `predict`'s own default (all the cores: what
`textclf predict` uses, and what N workers of cores / N threads each use together).

`--workers 1,2` runs each server of `--modes` once per worker count (`serve --workers
N`, each worker with serve's default share of the threads, cores / N), alternating within
each round like the modes; ratios are to the first server listed.

The clients run in this process (asyncio, one keep-alive connection each, a bare HTTP/1.1
client that costs far less CPU than httpx) and share the CPU with the server: on a 2-core
machine their CPU time is still part of every figure.

    python benchmarks/serve_load.py --rounds 3 --requests 400
    python benchmarks/serve_load.py --rounds 3 --requests 300 --clients 1,32 --workers 1,2 \
        --modes batching,0ms
    python benchmarks/serve_load.py --model models/classifier
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from _common import LABELS, machine, sst5_or_standin, summary
from textclf.serve import default_threads

TEXTCLF = str(Path(sys.executable).with_name("textclf"))
# --modes key: (label, serve flags)
MODES = {"batching": ("batching", []), "0ms": ("batching, 0 ms", ["--max-wait-ms", "0"]),
         "one-pass": ("0 ms, one pass", ["--max-wait-ms", "0", "--pass-size", "64"]),
         "none": ("no batching", ["--max-batch-size", "1"])}


def untrained_minilm(folder: Path) -> Path:
    """The bundled MiniLM with a fresh 5-class head, saved as `train` saves a model
    (speed does not depend on what the head learned)."""
    from textclf.model.loading import DEFAULT_MODEL, load_pretrained, save_classifier
    from textclf.model.folder import TrainingInfo

    tokenizer, model = load_pretrained(DEFAULT_MODEL, LABELS)
    save_classifier(model, tokenizer, folder,
                    TrainingInfo(labels=LABELS, max_length=128, base_model=DEFAULT_MODEL))
    return folder


def start_server(model: Path, extra: list[str], log_dir: Path) -> tuple[str, subprocess.Popen]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([TEXTCLF, "serve", "--model", str(model), "--port", str(port),
                             "--model-name", "clf", "--log-dir", str(log_dir), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return url, proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"server {extra} did not become ready")


class Connection:
    """One keep-alive HTTP/1.1 connection on asyncio streams: a much lighter load
    generator than httpx, whose per-request CPU would take a large share of 2 cores."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str):
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, url: str) -> "Connection":
        host, port = url.removeprefix("http://").split(":")
        return cls(*await asyncio.open_connection(host, int(port)), host)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\n"
                          f"Content-Type: application/json\r\n"
                          f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def load(url: str, texts: list[str], clients: int, requests: int) -> tuple[float, ...]:
    """(requests/s, p50 s, p99 s) for `clients` clients sending single texts."""
    latencies: list[float] = []
    order = iter(range(requests))  # shared: each request index is sent once
    connections = [await Connection.open(url) for _ in range(clients)]

    async def one_client(connection: Connection) -> None:
        for i in order:
            body = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1],
                                           "data": [texts[i % len(texts)]]}]}).encode()
            start = time.perf_counter()
            status, answer = await connection.post("/v2/models/clf/infer", body)
            latencies.append(time.perf_counter() - start)
            if status != 200:
                raise SystemExit(f"request {i}: HTTP {status}: {answer[:200]!r}")

    start = time.perf_counter()
    await asyncio.gather(*(one_client(c) for c in connections))
    elapsed = time.perf_counter() - start
    for connection in connections:
        connection.close()
    p50, p99 = np.percentile(latencies, [50, 99])
    return requests / elapsed, p50, p99


def predict_ceiling(loaded, texts: list[str]) -> float:
    """texts/s of `textclf predict`'s core on `texts`, the model already loaded."""
    from textclf.predict import label_texts

    label_texts(loaded, texts[:64])  # warm-up
    start = time.perf_counter()
    label_texts(loaded, texts)
    return len(texts) / (time.perf_counter() - start)


def arrival_ceiling(loaded, texts: list[str], size: int) -> float:
    """texts/s of the same engine on `texts` in arrival order, `size` at a time: what a
    server's batch holds when `size` clients each wait for their answer (no sorting
    across batches, so more padding than `predict_ceiling`)."""
    loaded.probabilities(texts[:size])  # warm-up
    start = time.perf_counter()
    for first in range(0, len(texts), size):
        loaded.probabilities(texts[first:first + size])
    return len(texts) / (time.perf_counter() - start)


def load_for_predict(model_dir: Path):
    """The Labeller `textclf predict` and `serve` use, with serve's engine choice."""
    from textclf.model.labeller import Labeller

    return Labeller.load(model_dir)


def contenders(modes: list[str], workers: list[int], threads: int) -> dict[str, list[str]]:
    """name -> serve flags: each mode once per worker count; one worker runs `threads`
    model threads, N workers serve's default share each."""
    found = {}
    for key in modes:
        label, flags = MODES[key]
        for count in workers:
            name = label if workers == [1] else f"{label}, {count} worker{'s' * (count > 1)}"
            found[name] = flags + (["--threads", str(threads)] if count == 1
                                   else ["--workers", str(count)])
    return found


def report(results: dict, ceilings: dict[str, list[float]], arrival: list[float],
           concurrency: list[int]) -> None:
    names = list(dict.fromkeys(name for name, _ in results))
    print("\nrequests/s and latency, median (range) over rounds:")
    for clients in concurrency:
        for name in names:
            runs = results[name, clients]
            print(f"  {clients:3d} clients, {name:26s} "
                  f"{summary([r[0] for r in runs]):22s} req/s   "
                  f"p50 {summary([r[1] * 1000 for r in runs]):22s} ms   "
                  f"p99 {summary([r[2] * 1000 for r in runs])} ms")
        for name in names[1:]:
            ratios = [b[0] / a[0] for b, a in zip(results[name, clients],
                                                 results[names[0], clients])]
            print(f"      {name} / {names[0]}: {statistics.median(ratios):.2f}x "
                  f"(median of the rounds' ratios)")
    for label, rates in ceilings.items():
        print(f"  ceiling, predict's core on the same texts, {label}: {summary(rates)} texts/s")
    most = max(concurrency)
    print(f"  ceiling, the same engine on the texts in arrival order, {most} at a time: "
          f"{summary(arrival)} texts/s")
    for name in names:
        rate = statistics.median(r[0] for r in results[name, most])
        shares = ", ".join(f"{rate / statistics.median(rates):.0%} of predict's ceiling "
                           f"({label})" for label, rates in ceilings.items())
        print(f"      {most} clients, {name}: {shares}, "
              f"{rate / statistics.median(arrival):.0%} of the arrival-order one")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a model folder (default: untrained-head MiniLM)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=400, help="requests per measurement")
    parser.add_argument("--clients", default="1,8,32", help="concurrency levels")
    parser.add_argument("--threads", type=int, default=default_threads(),
                        help="model threads of the one-worker servers and of predict's "
                             "first ceiling (default: serve's)")
    parser.add_argument("--workers", default="1",
                        help="worker counts, e.g. 1,2: each mode runs once per count")
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"servers to compare, of {', '.join(MODES)}: "
                             + "; ".join(f"{k}: {label}" for k, (label, _) in MODES.items()))
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch

    predict_threads = torch.get_num_threads()      # torch's default: what predict uses
    torch.set_num_threads(args.threads)
    from textclf.model.loading import quiet_transformers

    quiet_transformers()
    concurrency = [int(c) for c in args.clients.split(",")]
    servers_flags = contenders(args.modes.split(","), [int(w) for w in args.workers.split(",")],
                               args.threads)
    _, dev, source = sst5_or_standin(0)
    texts = dev["text"].tolist()
    scratch = Path(tempfile.mkdtemp(prefix="serve-load-"))
    model_dir = Path(args.model) if args.model else untrained_minilm(scratch / "model")
    name = args.model or "MiniLM-L6 (bundled, untrained head)"
    print(f"machine: {machine()}\ndata: {source}\nmodel: {name}; {args.requests} requests "
          f"per run, {args.rounds} rounds, {args.threads} model threads per one-worker "
          f"server\n")

    servers = {label: start_server(model_dir, flags, scratch / f"logs-{i}")
               for i, (label, flags) in enumerate(servers_flags.items())}
    results = {(label, c): [] for label in servers for c in concurrency}
    ceilings = {f"{args.threads} threads, as the servers": [],
                f"{predict_threads} threads, predict's default": []}
    arrival, loaded = [], load_for_predict(model_dir)
    try:
        for url, _ in servers.values():
            asyncio.run(load(url, texts, 4, 40))  # warm-up
        for round_ in range(args.rounds):
            for clients in concurrency:
                for label, (url, _) in servers.items():
                    results[label, clients].append(
                        asyncio.run(load(url, texts, clients, args.requests)))
                    rate, p50, p99 = results[label, clients][-1]
                    print(f"round {round_ + 1}, {clients:2d} clients, {label:26s}: "
                          f"{rate:7.1f} req/s, p50 {p50 * 1000:6.1f} ms, "
                          f"p99 {p99 * 1000:6.1f} ms", flush=True)
            for (label, rates), threads in zip(ceilings.items(),
                                               (args.threads, predict_threads)):
                torch.set_num_threads(threads)
                rates.append(predict_ceiling(loaded, texts[:args.requests]))
            torch.set_num_threads(args.threads)
            arrival.append(arrival_ceiling(loaded, texts[:args.requests], max(concurrency)))
    finally:
        for _, proc in servers.values():
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        shutil.rmtree(scratch, ignore_errors=True)
    report(results, ceilings, arrival, concurrency)


if __name__ == "__main__":
    main()
