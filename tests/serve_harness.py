"""Helpers for the serve tests: a small trained model folder, free ports, and servers on
127.0.0.1 (in this process on a thread, or as a `textclf serve` subprocess)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import httpx

from conftest import LABELS, toy_reviews

TEXTCLF = str(Path(sys.executable).with_name("textclf"))


def build_model_folder(tiny_model_dir: Path, folder: Path, steps: int = 40) -> Path:
    """The tiny BERT trained for a few steps on the toy reviews (so its labels vary by
    text), saved with a TrainingInfo the way `textclf train` saves a model."""
    import torch

    from textclf.data.dataset import fingerprint, write_split
    from textclf.model.batching import encode, pad_batch
    from textclf.model.loading import load_pretrained, save_classifier
    from textclf.model.folder import TrainingInfo

    torch.manual_seed(0)
    tokenizer, model = load_pretrained(str(tiny_model_dir), LABELS)
    data = toy_reviews(per_class=8)
    ids = encode(tokenizer, data["text"].tolist(), 32)
    targets = torch.tensor([LABELS.index(label) for label in data["label"]])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        rows = torch.randperm(len(ids))[:16].tolist()
        batch = pad_batch([ids[i] for i in rows], tokenizer.pad_token_id)
        loss = model(**batch, labels=targets[rows]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    folder.mkdir(parents=True, exist_ok=True)
    # Its validation split, named in training_info.json as `textclf train` names it (auto's
    # int8 check measures on it: textclf.model.int8_agreement).
    validation = folder.parent / f"{folder.name}-val.parquet"
    write_split(toy_reviews(per_class=6), validation)
    save_classifier(model, tokenizer, folder,
                    TrainingInfo(labels=list(LABELS), max_length=32, base_model="tiny-bert",
                                 data_sha256=fingerprint([validation]),
                                 validation_split=str(validation)))
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def thread_server(argv: list[str]) -> Iterator[tuple[str, object]]:
    """`textclf serve argv` in this process on a thread: (base URL, app)."""
    import uvicorn

    from textclf.serve import build_app, parse_args, uvicorn_config

    port = free_port()
    args = parse_args([*argv, "--port", str(port)])
    app, guard = build_app(args)
    # The guarded protocol, as `serve` runs it.
    server = uvicorn.Server(uvicorn_config(app, guard, args, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, timeout=30)
        yield url, app
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextlib.contextmanager
def process_server(argv: list[str], cwd: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """`textclf serve argv` as a subprocess: (base URL, process); stopped with SIGTERM."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([TEXTCLF, "serve", *argv, "--port", str(port), "--threads", "1"],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, timeout=90, proc=proc)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_ready(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{proc.stdout.read()}")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"server at {url} not ready after {timeout} s")


def send_json(url: str, path: str, body: dict) -> socket.socket:
    """POST `body` to `url + path` on a socket of its own and return at once, the whole
    request sent (unlike an httpx call on a thread, whose sending no one can wait for)."""
    where = urlsplit(url)
    data = json.dumps(body).encode()
    sock = socket.create_connection((where.hostname, where.port), timeout=60)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {where.netloc}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                 f"Connection: close\r\n\r\n".encode() + data)
    return sock


def json_response(sock: socket.socket) -> tuple[int, dict]:
    """(status, JSON body) of the response to `send_json`, read until the server closes."""
    with sock:
        raw = b"".join(iter(lambda: sock.recv(65536), b""))
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), raw[:200]
    return int(head.split()[1]), json.loads(body)
