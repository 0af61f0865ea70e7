"""Fault injection for the long-running paths (docs/durability.md): run a path in a process
group of its own, hit it with one fault at a random moment, run the documented recovery
command, and check the invariants. Shared by tests/test_faults.py (a small fixed-seed
sample) and benchmarks/fault_injection.py (many faults). The two sweep paths (the DVC
queue, `textclf kfp run --local`) are in tests/fault_sweeps.py, full disks in
tests/fault_enospc.py.

Each `*_trial` function returns a `Trial`: which fault, whether it landed (a signal sent
after the run had ended did not), and the invariants it broke, in words. An empty
`broken` is the promise kept.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import yaml

BIN = Path(sys.executable).parent
TEXTCLF, DVC = str(BIN / "textclf"), str(BIN / "dvc")
LABELS = ["very negative", "negative", "neutral", "positive", "very positive"]
WORDS = ("the food room film phone book app was awful dreadful poor weak okay average good "
         "nice superb brilliant really quite not very").split()


@dataclass
class Trial:
    path: str
    fault: str
    recovery: str
    landed: bool = True                 # False: the run had ended before the fault came
    broken: list[str] = field(default_factory=list)
    at_s: float = 0.0                   # when the fault came: seconds into the run (serve:
                                        # into the load); half_params: the byte cut at
    done: str = ""                      # push/pull: how far the transfer had got by then
    said: str = ""                      # push/pull, when something broke: the recovery's end;
                                        # queue: what DVC left or needed beyond the recovery;
                                        # kfp: which processes outlived the sweep, how long


def env(**extra: str) -> dict[str, str]:
    """One thread per process (a busy 2-core machine), no model hub, no DVC analytics."""
    from harness import command_env

    return command_env(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", **extra)


def tiny_model(folder: Path) -> Path:
    """The tests' tiny BERT (tests/conftest.py `tiny_model_dir` builds it here; scripts
    without fixtures call it): 2 layers, hidden size 32, random weights, the bundled
    tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from textclf.model.loading import bundled_model_dir

    tokenizer = AutoTokenizer.from_pretrained(bundled_model_dir())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=128, num_labels=3)
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# --- processes -----------------------------------------------------------------------------

class Job:
    """A command in a session (and process group) of its own, so that a fault reaches every
    process it starts; stdout and stderr read on threads as they come."""

    started_here: list["Job"] = []      # every job, for `kill_all` on the way out

    def __init__(self, cmd: list, cwd: Path, environ: dict[str, str],
                 fsize: int | None = None) -> None:
        self.cmd = [str(c) for c in cmd]
        self.proc = subprocess.Popen(self.cmd, cwd=cwd, env=environ, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True,
                                     preexec_fn=None if fsize is None else _file_limit(fsize))
        self.sid = self.proc.pid
        self.started = time.monotonic()
        Job.started_here.append(self)
        self._chunks: dict[str, list[bytes]] = {"out": [], "err": []}
        self._readers = [threading.Thread(target=self._read, args=(pipe, name), daemon=True)
                         for pipe, name in ((self.proc.stdout, "out"), (self.proc.stderr, "err"))]
        for reader in self._readers:
            reader.start()

    def _read(self, pipe, name: str) -> None:
        for chunk in iter(lambda: pipe.read1(65536), b""):
            self._chunks[name].append(chunk)

    def text(self, name: str = "both") -> str:
        names = ["out", "err"] if name == "both" else [name]
        return "".join(b"".join(self._chunks[n]).decode(errors="replace") for n in names)

    def signal(self, sig: int) -> bool:
        """Send `sig` to the whole group; False if the run had already ended."""
        if self.proc.poll() is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.sid, sig)
        return True

    def wait(self, timeout: float) -> int | None:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        for reader in self._readers:
            reader.join(timeout=10)
        return code

    def leftovers(self, grace_s: float = 10.0) -> list[str]:
        """Processes of this session still alive `grace_s` after the run ended: each is an
        orphan (a broken invariant), killed here so that it cannot disturb the next run."""
        deadline = time.monotonic() + grace_s
        while True:
            alive = session_members(self.sid)
            if not alive or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        found = []
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                found.append(f"orphan process {proc.pid}: {' '.join(proc.cmdline())[:120]}")
                proc.kill()
        return found


def kill_all() -> None:
    """SIGKILL what is left of every job started here (an interrupted test or benchmark)."""
    for job in Job.started_here:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(job.sid, signal.SIGKILL)
        job.proc.poll()


def _file_limit(limit: int):
    """A full disk for one process: writes past `limit` bytes fail with EFBIG (SIGXFSZ,
    which would kill it, is ignored, as a full disk sends none)."""
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def session_members(sid: int) -> list[psutil.Process]:
    """Live (not zombie) processes whose session is `sid`."""
    members = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getsid(proc.pid) == sid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return members


def run_job(cmd: list, cwd: Path, environ: dict[str, str], timeout: float = 900,
            fsize: int | None = None) -> tuple[int | None, str, list[str]]:
    """Run to the end: (exit code, output, orphans)."""
    job = Job(cmd, cwd, environ, fsize)
    code = job.wait(timeout)
    if code is None:
        job.signal(signal.SIGKILL)
        job.wait(60)
    return code, job.text(), job.leftovers(grace_s=2.0)


def scratch_left(folder: Path, *, recursive: bool = True) -> list[str]:
    """Scratch that outputs.py and the checkpoint store make (`.NAME.tmp-*`, `.NAME.tmp-old`)
    under `folder`, outside .git and .dvc."""
    found = []
    walk = os.walk(folder) if recursive else [(str(folder), [], os.listdir(folder))]
    for root, dirs, files in walk:
        dirs[:] = [d for d in dirs if d not in (".git", ".dvc")] if recursive else []
        for name in [*files, *dirs]:
            if re.fullmatch(r"\..+\.tmp-.*", name):
                found.append(str(Path(root, name).relative_to(folder)))
    return found


# --- textclf predict --input F --output O ----------------------------------------------------

@dataclass
class PredictCase:
    model: Path
    input: Path
    folder: Path                 # where the output goes
    expected: bytes              # an uninterrupted run's output
    seconds: float               # an uninterrupted run's wall time

    @property
    def output(self) -> Path:
        return self.folder / "labelled.csv"

    def command(self) -> list:
        return [TEXTCLF, "predict", "--model", self.model, "--input", self.input,
                "--output", self.output, "--chunk-size", "200", "--precision", "fp32"]


def write_texts(path: Path, rows: int, seed: int = 0) -> None:
    """`rows` short texts (3 to 12 words) in a CSV with an id column."""
    rng = random.Random(seed)
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "text"])
        for i in range(rows):
            writer.writerow([i, " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))])


def predict_case(model: Path, folder: Path, rows: int = 3000) -> PredictCase:
    """The input, and an uninterrupted run's output and time to compare faults with."""
    folder.mkdir(parents=True, exist_ok=True)
    write_texts(folder / "texts.csv", rows)
    case = PredictCase(model, folder / "texts.csv", folder / "out", b"", 0.0)
    started = time.monotonic()
    code, output, _ = run_job(case.command(), folder, env())
    assert code == 0, f"uninterrupted predict failed:\n{output[-3000:]}"
    case.seconds = time.monotonic() - started
    case.expected = case.output.read_bytes()
    case.output.unlink()
    return case


def predict_trial(case: PredictCase, fault: str, rng: random.Random) -> Trial:
    """One fault in `textclf predict --input F --output O`, then the same command again.
    O was there from an earlier run (half the time) or absent; after the fault it must be
    as it was (absent, or that earlier run's whole file)."""
    trial = Trial("predict", fault, "the same `textclf predict` again")
    out = case.output
    existed = rng.random() < 0.5
    if existed:
        out.write_bytes(case.expected)
    else:
        out.unlink(missing_ok=True)
    fsize = rng.randrange(len(case.expected)) if fault == "fsize" else None
    job = Job(case.command(), case.folder, env(), fsize=fsize)
    if fault in ("sigkill", "sigterm"):
        time.sleep(rng.uniform(0, 0.95 * case.seconds))
        trial.at_s = time.monotonic() - job.started
        trial.landed = job.signal(signal.SIGTERM if fault == "sigterm" else signal.SIGKILL) \
            and trial.landed
    code = job.wait(120)
    if code is None:
        trial.broken.append("predict did not end within 120 s of the fault")
        job.signal(signal.SIGKILL)
        job.wait(30)
    trial.broken += job.leftovers()
    if fault == "fsize":
        trial.landed = code != 0
        if not trial.landed and out.read_bytes() != case.expected:
            trial.broken.append("predict exited 0 under a file-size limit but O is not whole")
        if scratch_left(case.folder, recursive=False):
            trial.broken.append("a failed write left its scratch file: "
                                f"{scratch_left(case.folder, recursive=False)}")
    if out.exists() and out.read_bytes() != case.expected:
        trial.broken.append(f"after the fault O is there but differs from an uninterrupted "
                            f"run's ({out.stat().st_size} of {len(case.expected)} bytes)")
    elif existed and not out.exists():
        trial.broken.append("after the fault the earlier O is gone")
    started = time.monotonic()
    code, output, orphans = run_job(case.command(), case.folder, env())
    trial.broken += orphans
    if code != 0:
        trial.broken.append(f"recovery exited {code}: {output.strip()[-300:]}")
    elif out.read_bytes() != case.expected:
        trial.broken.append("after recovery O differs from an uninterrupted run's")
    if code == 0:
        # An uninterrupted run: how long the next fault's run may take on this busy machine.
        case.seconds = time.monotonic() - started
    if scratch_left(case.folder, recursive=False):
        trial.broken.append(f"scratch left after recovery: "
                            f"{scratch_left(case.folder, recursive=False)}")
    return trial


# --- textclf serve under load ----------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Sent:
    id: str
    texts: list[str]
    sent_at: float | None = None        # monotonic time the whole body had been sent
    status: int | None = None
    labels: list[str] | None = None
    error: str = ""                     # why there is no status: reset, closed, refused


class Load:
    """Client threads posting /predict with unique ids, each on a connection of its own
    (so that 'the whole body was sent' is a moment the client knows), until stopped."""

    def __init__(self, port: int, tag: str, seed: int, threads: int = 4) -> None:
        self.port, self.tag = port, tag
        self.sent: list[Sent] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._client, args=(i, seed), daemon=True)
                        for i in range(threads)]

    def __enter__(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=90)

    def _client(self, number: int, seed: int) -> None:
        rng = random.Random(seed * 100 + number)
        for n in range(1_000_000):
            if self.stopping.is_set():
                return
            texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 9)))
                     for _ in range(rng.randint(1, 3))]
            request = Sent(f"{self.tag}-{number}-{n}", texts)
            self.sent.append(request)
            if not self._send(request):
                time.sleep(0.05)       # the server is gone: do not spin

    def _send(self, request: Sent) -> bool:
        body = json.dumps({"id": request.id, "texts": request.texts}).encode()
        head = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                f"Connection: close\r\n\r\n").encode()
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=60) as sock:
                sock.sendall(head + body)
                request.sent_at = time.monotonic()
                raw = b"".join(iter(lambda: sock.recv(65536), b""))
        except OSError as err:
            request.error = type(err).__name__
            return False
        head, _, payload = raw.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 "):
            request.error = f"closed after {len(raw)} bytes of answer"
            return False
        status = int(head.split()[1])
        try:
            answer = json.loads(payload)
            labels = [p["label"] for p in answer["predictions"]] if status == 200 else None
        except (ValueError, KeyError, TypeError):
            # Cut off in the middle of the answer (a kill): the client has no answer.
            request.error = f"answer cut short after {len(raw)} bytes"
            return False
        request.status, request.labels = status, labels
        return True


@dataclass
class ServeCase:
    model: Path
    folder: Path
    server: Job | None = None           # the server now answering (the last recovery)
    port: int = 0
    counter: int = 0

    @property
    def log_dir(self) -> Path:
        return self.folder / "predictions"

    def start(self, fsize: int | None = None) -> tuple[Job | None, str]:
        """`textclf serve` on a free port with the case's log folder; (job, '') once ready,
        else (None, why)."""
        self.port = free_port()
        job = Job([TEXTCLF, "serve", "--model", self.model, "--port", self.port,
                   "--log-dir", self.log_dir, "--threads", "1", "--precision", "fp32",
                   "--grace-seconds", "20"], self.folder, env(), fsize=fsize)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if job.proc.poll() is not None:
                return None, f"serve exited {job.proc.returncode}: {job.text()[-500:]}"
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n"
                             b"Connection: close\r\n\r\n")
                if b" 200 " in sock.recv(200):
                    return job, ""
            time.sleep(0.1)
        job.signal(signal.SIGKILL)
        return None, "serve not ready after 120 s"

    def stop(self) -> list[str]:
        """SIGTERM the server answering now; broken invariants if it lingers."""
        if self.server is None:
            return []
        server, self.server = self.server, None
        server.signal(signal.SIGTERM)
        broken = [] if server.wait(60) is not None else ["serve did not exit 60 s after SIGTERM"]
        return broken + server.leftovers()


def http(port: int, method: str, path: str, body: object = None) -> tuple[int, str]:
    """One request on a connection of its own: (status, body text)."""
    data = b"" if body is None else json.dumps(body).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                     f"application/json\r\nContent-Length: {len(data)}\r\nConnection: close"
                     f"\r\n\r\n".encode() + data)
        raw = b"".join(iter(lambda: sock.recv(65536), b""))
    head, _, payload = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), payload.decode(errors="replace")


def read_log(log_dir: Path) -> tuple[dict[str, list[dict]], list[str]]:
    """The prediction log's lines by request id, and its damaged lines (in words)."""
    by_id: dict[str, list[dict]] = {}
    damaged = []
    for path in sorted(log_dir.glob("predictions-*.jsonl")):
        for number, line in enumerate(path.read_bytes().split(b"\n")[:-1], 1):
            try:
                record = json.loads(line)
                by_id.setdefault(record["request_id"], []).append(record)
            except (ValueError, KeyError, TypeError):
                damaged.append(f"{path.name} line {number} does not parse: {line[:80]!r}")
        if path.stat().st_size and not path.read_bytes().endswith(b"\n"):
            damaged.append(f"{path.name} ends with a partial line")
    return by_id, damaged


def log_write_errors(port: int) -> int | None:
    """textclf_log_write_errors_total{log="predictions"} from GET /metrics."""
    with contextlib.suppress(OSError):
        status, text = http(port, "GET", "/metrics")
        found = re.search(r'^textclf_log_write_errors_total\{log="predictions"\} (\S+)$',
                          text, re.M)
        return int(float(found[1])) if status == 200 and found else 0
    return None


def serve_trial(case: ServeCase, fault: str, rng: random.Random) -> Trial:
    """One fault in a `textclf serve` under 4 clients' load, then serve started again on
    the same log folder (which answers the next trial's load)."""
    trial = Trial("serve", fault, "`textclf serve` again on the same --log-dir")
    if fault == "fsize" or case.server is None:
        trial.broken += case.stop()
        used = sum(p.stat().st_size for p in case.log_dir.glob("predictions-*.jsonl"))
        # RLIMIT_FSIZE caps every file's size: the day's log fills up a few KB from now.
        limit = used + rng.randrange(30_000) if fault == "fsize" else None
        case.server, why = case.start(fsize=limit)
        if case.server is None:
            trial.broken.append(f"serve did not start for the trial: {why}")
            return trial
    server, port = case.server, case.port
    case.counter += 1
    with Load(port, f"t{case.counter}", rng.randrange(10**6)) as load:
        load_started = time.monotonic()
        time.sleep(rng.uniform(0.3, 3.0))
        fault_at = time.monotonic()
        trial.at_s = fault_at - load_started
        if fault != "fsize":
            server.signal(signal.SIGKILL if fault == "sigkill" else signal.SIGTERM)
            code = server.wait(60)
            if code is None:
                trial.broken.append("serve did not exit 60 s after the fault")
            elif fault == "sigterm" and code not in (0, -signal.SIGTERM):
                # uvicorn raises SIGTERM again once its graceful shutdown is done: -15.
                trial.broken.append(f"serve exited {code} on SIGTERM")
    errors = None
    if fault == "fsize":
        errors = log_write_errors(port)      # the clients are done: the count is final
        trial.landed = bool(errors)
        trial.broken += case.stop()
    case.server = None
    trial.broken += server.leftovers()
    sent = list(load.sent)
    trial.broken += check_log(case.log_dir, sent, fault, server.text("err"), errors)
    if fault == "sigterm":
        lost = [f"{r.id} ({r.status or r.error})" for r in sent
                if r.sent_at is not None and r.sent_at < fault_at and r.status != 200]
        if lost:
            trial.broken.append(f"{len(lost)} requests fully sent before SIGTERM were not "
                                f"answered: {lost[:3]}")
    trial.broken += recover_serve(case, sent)
    return trial


def check_log(log_dir: Path, sent: list[Sent], fault: str, stderr: str,
              errors: int | None) -> list[str]:
    """Every answered request logged whole (its texts in order, the labels it was given),
    no damaged line; under a full disk, every unlogged answer reported (stderr, /metrics)."""
    by_id, broken = read_log(log_dir)
    missing = []
    for request in (r for r in sent if r.status == 200):
        lines = by_id.get(request.id)
        if lines is None:
            missing.append(request.id)
        elif ([(x["text"], x["label"]) for x in lines]
              != list(zip(request.texts, request.labels))):
            broken.append(f"request {request.id}: logged lines differ from what was sent "
                          f"and answered")
    if fault not in ("fsize", "enospc"):
        if missing:
            broken.append(f"{len(missing)} answered requests not in the log: {missing[:3]}")
        return broken
    unreported = [m for m in missing if f"could not write request {m}" not in stderr]
    if unreported:
        broken.append(f"{len(unreported)} answered requests neither logged nor reported on "
                      f"stderr: {unreported[:3]}")
    if errors != len(missing):
        broken.append(f"textclf_log_write_errors_total is {errors}, but {len(missing)} "
                      f"answered requests are not in the log")
    return broken


def recover_serve(case: ServeCase, sent: list[Sent]) -> list[str]:
    """Serve again on the same log folder: it answers, and takes a label for a request
    answered (and logged) before the fault."""
    case.server, why = case.start()
    if case.server is None:
        return [f"recovery: {why}"]
    status, body = http(case.port, "POST", "/predict", {"texts": ["the film was good"]})
    broken = [] if status == 200 else [f"recovery: /predict answered {status}: {body[:200]}"]
    by_id, _ = read_log(case.log_dir)
    logged = [r for r in sent if r.status == 200 and r.id in by_id]
    if logged:
        status, body = http(case.port, "POST", "/feedback",
                            {"request_id": logged[-1].id, "index": 0, "label": LABELS[0]})
        if status != 200:
            broken.append(f"recovery: /feedback for {logged[-1].id} answered {status}: "
                          f"{body[:200]}")
    return broken


# --- dvc repro of the pipeline ---------------------------------------------------------------

TIMES = ("time.json",)       # beside the scores, this run's seconds: differ by design


@dataclass
class ReproCase:
    project: Path
    checkpoints: Path
    metrics: dict[str, bytes]            # an uninterrupted run's metrics files
    seconds: float                       # its `dvc repro -f`
    train_seconds: float                 # from "Running stage 'train'" to the next stage
    cache_bytes: int = 0                 # what it put in an empty DVC cache (whole pages)
    checkpoint_bytes: int = 0            # the most its checkpoint folder held (whole pages)

    def env(self) -> dict[str, str]:
        # Interval 0: a checkpoint after every epoch, so that kills find some to resume.
        return env(TEXTCLF_CHECKPOINT_DIR=str(self.checkpoints),
                   TEXTCLF_CHECKPOINT_INTERVAL="0")


def metrics_files(project: Path) -> dict[str, bytes]:
    return {str(p.relative_to(project)): p.read_bytes()
            for p in sorted((project / "metrics").rglob("*"))
            if p.is_file() and p.name not in TIMES}


def repro_case(folder: Path, tiny_model: Path) -> ReproCase:
    """A project copy on the tiny model, 2 epochs, run once whole (`dvc repro -f`)."""
    from harness import copy_project

    project = copy_project(folder / "project", "fault injection", model={"name": str(tiny_model)},
                           train={"epochs": 2})
    case = ReproCase(project, folder / "checkpoints", {}, 0.0, 0.0)
    job = Job([DVC, "repro", "-f"], project, case.env())
    marks = watch_stages(job)
    checkpoint_peak = watch_size(case.checkpoints, job)
    code = job.wait(900)
    assert code == 0, f"uninterrupted dvc repro failed:\n{job.text()[-3000:]}"
    case.seconds = time.monotonic() - job.started
    case.train_seconds = marks.get("evaluate", case.seconds) - marks["train"]
    case.metrics = metrics_files(project)
    case.cache_bytes = pages_used(project / ".dvc" / "cache")
    case.checkpoint_bytes = max(checkpoint_peak)
    return case


def pages_used(folder: Path) -> int:
    """Bytes the files under `folder` take on a tmpfs: whole pages each."""
    page = os.sysconf("SC_PAGE_SIZE")
    return sum(-(-p.stat().st_size // page) * page for p in folder.rglob("*")
               if p.is_file() and not p.is_symlink()) if folder.is_dir() else 0


def watch_size(folder: Path, job: Job) -> list[int]:
    """The sizes `folder` has had while `job` runs (`pages_used`, every 20 ms), filled in
    as it goes."""
    sizes = [0]

    def watch() -> None:
        while job.proc.poll() is None:
            with contextlib.suppress(OSError):     # a file renamed or removed mid-walk
                sizes.append(pages_used(folder))
            time.sleep(0.02)

    threading.Thread(target=watch, daemon=True).start()
    return sizes


def watch_stages(job: Job) -> dict[str, float]:
    """Seconds after the start at which each stage began, filled in as the run goes."""
    marks: dict[str, float] = {}

    def watch() -> None:
        while job.proc.poll() is None or not marks:
            for stage in re.findall(r"Running stage '(\w+)'", job.text("out")):
                marks.setdefault(stage, time.monotonic() - job.started)
            if job.proc.poll() is not None:
                return
            time.sleep(0.05)

    threading.Thread(target=watch, daemon=True).start()
    return marks


def check_project(case: ReproCase) -> list[str]:
    """After recovery: `dvc status` clean, every output as dvc.lock records it, every
    cache object intact, the metrics of an uninterrupted run, no scratch, no checkpoint."""
    broken = []
    code, output, orphans = run_job([DVC, "status", "--json"], case.project, case.env())
    broken += orphans
    if code != 0 or json.loads(output.strip() or "{}") != {}:
        broken.append(f"dvc status is not clean: {output.strip()[:300]}")
    broken += outputs_match_lock(case.project)
    broken += damaged_cache_objects(case.project)
    changed = differing(case.metrics, metrics_files(case.project))
    if changed:
        broken.append(f"metrics differ from an uninterrupted run's: {changed[:4]}")
    return broken + left_behind(case.project, case.checkpoints)


def differing(expected: dict[str, bytes], found: dict[str, bytes]) -> list[str]:
    """The files missing from either side or different between them, sorted."""
    return sorted(name for name in set(expected) | set(found)
                  if expected.get(name) != found.get(name))


def left_behind(project: Path, checkpoints: Path) -> list[str]:
    """Scratch files in the project, and checkpoints once every training has finished."""
    broken = []
    scratch = scratch_left(project)
    if scratch:
        broken.append(f"scratch left in the project: {scratch[:4]}")
    if checkpoints.is_dir() and os.listdir(checkpoints):
        broken.append(f"left in the checkpoint folder after finished training: "
                      f"{sorted(os.listdir(checkpoints))[:4]}")
    return broken


def md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as source:
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_object(project: Path, md5_hash: str) -> Path:
    return project / ".dvc" / "cache" / "files" / "md5" / md5_hash[:2] / md5_hash[2:]


def outputs_match_lock(project: Path) -> list[str]:
    """Every cached output in the workspace hashes to what dvc.lock records (a folder: each
    file against the .dir object in the cache)."""
    import yaml

    lock = yaml.safe_load((project / "dvc.lock").read_text())
    broken = []
    for stage, entry in lock["stages"].items():
        for out in entry.get("outs", []):
            path, recorded = project / out["path"], out["md5"]
            if out["path"] in uncached_outputs(project):
                continue                   # metrics kept in git: `dvc status` checks them
            if not recorded.endswith(".dir"):
                if not path.is_file() or md5(path) != recorded:
                    broken.append(f"{out['path']} does not match dvc.lock ({stage})")
                continue
            listing = cache_object(project, recorded)
            if not listing.is_file():
                broken.append(f"{out['path']}: its .dir object is not in the cache")
                continue
            files = {e["relpath"]: e["md5"] for e in json.loads(listing.read_text())}
            there = {str(p.relative_to(path)): p for p in path.rglob("*") if p.is_file()} \
                if path.is_dir() else {}
            if set(there) != set(files) or any(md5(there[r]) != h for r, h in files.items()):
                broken.append(f"{out['path']} does not match dvc.lock ({stage})")
    return broken


def uncached_outputs(project: Path) -> set[str]:
    """dvc.yaml's outputs with `cache: false` (no object in the cache to list a folder)."""
    import yaml

    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    return {name for stage in stages.values() for out in stage.get("outs", [])
            if isinstance(out, dict) for name, spec in out.items()
            if (spec or {}).get("cache") is False}


def damaged_cache_objects(project: Path) -> list[str]:
    """Cache objects whose content does not hash to their name (DVC would restore them)."""
    root = project / ".dvc" / "cache" / "files" / "md5"
    broken = []
    for path in root.rglob("*") if root.is_dir() else []:
        if not path.is_file():
            continue
        name = path.parent.name + path.name
        if name.endswith(".dir"):
            continue                       # a listing; its files are checked above
        if len(name) != 32:
            broken.append(f"scratch in the DVC cache: {path.relative_to(project)}")
        elif md5(path) != name:
            broken.append(f"damaged cache object {path.relative_to(project)}")
    return broken


def repro_trial(case: ReproCase, fault: str, rng: random.Random) -> Trial:
    """One fault in `dvc repro`, then the documented recovery, then the invariants."""
    if fault == "half_params":
        return half_params_trial(case, rng)
    if fault == "damaged_cache":
        return damaged_cache_trial(case, rng)
    trial = Trial("repro", fault, "`dvc repro`")
    # `-f -s train` re-runs training only (as a changed train param would); `-f` all stages.
    command = [DVC, "repro", "-f", "-s", "train"] if fault != "sigkill" else [DVC, "repro", "-f"]
    job = Job(command, case.project, case.env())
    marks = watch_stages(job)
    if fault == "damaged_checkpoint":
        trial.landed = wait_for(lambda: list(case.checkpoints.glob("*.pt")), job, 600)
        time.sleep(0.2)                    # its sidecar .json, written just after
    elif fault == "sigkill_train":
        trial.landed = wait_for(lambda: "train" in marks, job, 600)
        time.sleep(rng.uniform(0, 0.9 * case.train_seconds))
    else:
        time.sleep(rng.uniform(0, case.seconds))
    trial.at_s = time.monotonic() - job.started
    trial.landed = job.signal(signal.SIGKILL) and trial.landed
    job.wait(120)
    trial.broken += job.leftovers()
    if fault == "damaged_checkpoint":
        for checkpoint in case.checkpoints.glob("*.pt"):
            with open(checkpoint, "r+b") as damaged:
                damaged.truncate(int(checkpoint.stat().st_size * rng.uniform(0.05, 0.95)))
    return recovered_by_repro(case, trial)


def recovered_by_repro(case: ReproCase, trial: Trial) -> Trial:
    """The repro path's recovery, `dvc repro`, and then the invariants (`check_project`);
    a clean start for the next trial where anything broke."""
    code, output, orphans = run_job([DVC, "repro"], case.project, case.env())
    trial.broken += orphans
    if code != 0:
        trial.broken.append(f"recovery `dvc repro` exited {code}: {last_error(output)}")
    else:
        trial.broken += check_project(case)
    if trial.broken:
        repair(case)
    return trial


def wait_for(condition, job: Job, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if job.proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def last_error(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"(ERROR|error|\w+Error)\b", line)]
    return " / ".join(errors[-2:] or lines[-1:])[:400]


def repair(case: ReproCase) -> None:
    """After a broken trial: a clean start for the next (not a recovery anyone promised)."""
    for stale in case.checkpoints.glob("*") if case.checkpoints.is_dir() else []:
        stale.unlink()
    run_job(["git", "checkout", "--", "params.yaml"], case.project, case.env())
    run_job([DVC, "repro", "-f"], case.project, case.env())


def half_params_trial(case: ReproCase, rng: random.Random) -> Trial:
    """params.yaml cut short at a random byte, at a point that leaves it no longer a whole
    params file: `dvc repro` refuses with an error naming params.yaml and damages nothing;
    putting the file back (`git checkout params.yaml`) and `dvc repro` gives the run back."""
    from textclf.params import ParamsError, load_params

    trial = Trial("repro", "half_params", "`git checkout params.yaml` (or fix it), `dvc repro`")
    path = case.project / "params.yaml"
    whole = path.read_bytes()
    for _ in range(200):
        cut = rng.randrange(1, len(whole))
        path.write_bytes(whole[:cut])
        try:
            load_params(path)
        except ParamsError:
            break                           # a file textclf refuses: a half-written one
    else:
        raise AssertionError("no cut of params.yaml that textclf refuses")
    trial.at_s = cut
    before = {name: h for name, h in output_hashes(case.project).items()}
    code, output, orphans = run_job([DVC, "repro"], case.project, case.env())
    trial.broken += orphans
    if code == 0:
        trial.broken.append("dvc repro succeeded with a half-written params.yaml")
    if "Traceback" in output:
        trial.broken.append(f"a traceback instead of an error: {last_error(output)}")
    errors = [line for line in output.splitlines()
              if re.match(r"(ERROR|error):", line)]
    named = half_params_named(whole[:cut])
    if not any(name in line for line in errors for name in named):
        trial.broken.append(f"{refusal_unnamed(errors)}: {errors[:2]}")
    after = output_hashes(case.project)
    changed = [name for name in after if name in before and after[name] != before[name]]
    if changed:
        trial.broken.append(f"outputs changed by the refused run: {changed}")
    path.write_bytes(whole)                 # what `git checkout params.yaml` does here
    return recovered_by_repro(case, trial)


def damaged_cache_trial(case: ReproCase, rng: random.Random) -> Trial:
    """An object of the DVC cache damaged after DVC wrote it (a file's object or a folder's
    `.dir` listing; one byte changed, or the file cut short, as a faulty disk or a stray
    process would): `dvc status` does not call the outputs up to date (DVC hashes again an
    object whose file changed, and drops one that no longer matches its name), and `dvc
    repro` runs the stage that made it again: the cache whole, every output and metric
    an uninterrupted run's."""
    trial = Trial("repro", "damaged_cache", "`dvc repro` (or `dvc pull` where the remote has it)")
    root = case.project / ".dvc" / "cache" / "files" / "md5"
    path = rng.choice(sorted(p for p in root.rglob("*") if p.is_file() and p.stat().st_size))
    whole = path.read_bytes()
    at = rng.randrange(len(whole))
    if rng.random() < 0.5:
        damaged = whole[:at] + bytes([whole[at] ^ 0xFF]) + whole[at + 1:]
    else:
        damaged = whole[:at]
    path.chmod(0o644)                       # DVC leaves its objects read-only
    path.write_bytes(damaged)
    trial.at_s = at
    trial.done = f"{path.relative_to(root)}, {len(whole)} -> {len(damaged)} bytes"
    code, output, orphans = run_job([DVC, "status", "--json"], case.project, case.env())
    trial.broken += orphans
    if code != 0 or json.loads(output.strip() or "{}") == {}:
        trial.broken.append(f"dvc status calls the outputs up to date with {trial.done} "
                            f"damaged: {output.strip()[:200]}")
    return recovered_by_repro(case, trial)


def half_params_named(cut: bytes) -> list[str]:
    """What a refusal of this cut may name for the user to find the damage: params.yaml, or,
    where DVC fails on the `${data.path}` it read from the cut file (a dependency of the
    prepare stage, resolved before any textclf code runs), that key or the path it read."""
    try:
        document = yaml.safe_load(cut)
    except yaml.YAMLError:
        return ["params.yaml"]
    data = document.get("data") if isinstance(document, dict) else None
    path = data.get("path") if isinstance(data, dict) else None
    return ["params.yaml", "data.path"] + ([path] if isinstance(path, str) and path else [])


# DVC 3.67's own words on a `data.path` the cut left short (docs/durability.md): its
# message for a null interpolated into a path (treeverse/dvc#5006), and the one for a
# dependency (`data`) that holds a stage's output (`data/prepared`), which names the stage
# but neither item. textclf has no code that runs before DVC resolves dvc.yaml.
DVC_NULL_PATH = "DVC's 'unexpected error' on a null ${data.path}"
DVC_OVERLAP = "DVC's 'Same item(s) ... in stage: prepare' on a data.path that holds data/prepared"


def refusal_unnamed(errors: list[str]) -> str:
    if any(line.strip() == "ERROR: unexpected error" for line in errors):
        return DVC_NULL_PATH
    if any("Same item(s) are defined as both a dependency and an output" in line
           for line in errors):
        return DVC_OVERLAP
    return "no error line names params.yaml, data.path or its value"


def output_hashes(project: Path) -> dict[str, str]:
    """md5 of every file under the pipeline's outputs that is there now."""
    found = {}
    for folder in ("data/prepared", "data/resampled", "models/classifier", "metrics"):
        for path in sorted((project / folder).rglob("*")):
            if path.is_file() and path.name not in TIMES:
                found[str(path.relative_to(project))] = md5(path)
    return found


# --- dvc push / dvc pull to S3 (moto on 127.0.0.1) -----------------------------------------

BLOBS = '''import random, sys
from pathlib import Path

# Seeded random bytes (incompressible, like weights): the same files on every run.
rng, folder = random.Random(0), Path(sys.argv[1])
folder.mkdir()
for i in range(int(sys.argv[2])):
    (folder / f"part-{i:03d}.bin").write_bytes(rng.randbytes(int(sys.argv[3])))
Path(sys.argv[4]).write_bytes(rng.randbytes(4 * int(sys.argv[3])))
'''
LAYOUT = "files/md5/"                # DVC 3's objects under the remote's url


@dataclass
class TransferCase:
    project: Path
    server: object                       # s3_server.S3Server, in this process
    s3: object                           # remote_project.S3: its client and credentials
    keys: set[str]                       # the remote after an uninterrupted push
    push_seconds: float = 0.0
    pull_seconds: float = 0.0
    store: str = "store"                 # the remote's folder in the bucket now
    pushes: int = 0

    @property
    def site_cache(self) -> Path:
        return self.project.parent / "settings" / "dvc-site-cache"

    def env(self) -> dict[str, str]:
        """The S3 keys, and this machine's AWS and DVC settings kept out (not through
        `remote_project.isolate`, whose module-wide folders another test may be using)."""
        settings = self.project.parent / "settings"
        return {**self.s3.env, "OMP_NUM_THREADS": "1",
                "AWS_CONFIG_FILE": str(settings / "aws-config"),
                "AWS_SHARED_CREDENTIALS_FILE": str(settings / "aws-credentials"),
                "DVC_GLOBAL_CONFIG_DIR": str(settings / "dvc-global"),
                "DVC_SYSTEM_CONFIG_DIR": str(settings / "dvc-system"),
                "DVC_SITE_CACHE_DIR": str(self.site_cache)}

    def command(self, direction: str) -> list:
        return [DVC, direction, "-r", "storage"]

    def timed(self, direction: str) -> float:
        """An uninterrupted push (into an empty folder) or pull (into an empty cache)."""
        if direction == "push":
            self.new_store()
        else:
            self.empty_local()
        started = time.monotonic()
        code, output, orphans = run_job(self.command(direction), self.project, self.env())
        assert code == 0 and not orphans, f"uninterrupted dvc {direction} failed:\n{output}"
        return time.monotonic() - started

    def remote_keys(self) -> set[str]:
        """Keys under the remote's folder, relative to it."""
        return {key[len(self.store) + 1:] for key in self.s3.keys()
                if key.startswith(self.store + "/")}

    def new_store(self) -> None:
        """Point the remote at an empty folder of the bucket, and drop the old one. Not the
        old folder emptied behind DVC's back: DVC may remember that a remote holds a
        directory whole and not push it again (treeverse/dvc#4164)."""
        client = self.s3.client()
        for key in self.remote_keys():
            client.delete_object(Bucket="textclf", Key=f"{self.store}/{key}")
        self.pushes += 1
        self.store = f"push-{self.pushes}/store"
        (self.project / ".dvc" / "config.local").write_text(
            f"['remote \"storage\"']\n    url = s3://textclf/{self.store}\n"
            f"    endpointurl = {self.s3.endpoint}\n")

    def empty_local(self) -> None:
        """A fresh clone's state before `dvc pull`: no cache, no outputs, and none of what
        DVC keeps about them (.dvc/tmp, the site cache's indexes)."""
        for folder in (self.project / ".dvc" / "cache", self.project / ".dvc" / "tmp",
                       *self.site_cache.glob("*")):
            shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(self.project / "blobs", ignore_errors=True)
        (self.project / "one.bin").unlink(missing_ok=True)

    def stop(self) -> None:
        self.server.stop()


def transfer_case(folder: Path, files: int = 40, size: int = 192 * 1024) -> TransferCase:
    """A DVC project (no git) whose one stage writes `files` random files of `size` bytes
    and one of 4 x `size`, an S3 remote on a moto server in this process, and an
    uninterrupted push's and pull's times to draw fault moments from."""
    from remote_project import BUCKET, S3, S3_URL, call
    from s3_server import S3Server

    settings = folder / "settings"
    for name in ("dvc-global", "dvc-system", "dvc-site-cache"):
        (settings / name).mkdir(parents=True)
    for name in ("aws-config", "aws-credentials"):
        (settings / name).write_text("")          # dvc-s3 insists that a named file exists
    server = S3Server()
    server.start()
    s3 = S3(server.endpoint, "testing", "testing")   # moto checks no signature here
    s3.client().create_bucket(Bucket=BUCKET)
    project = folder / "project"
    project.mkdir()
    (project / "make_blobs.py").write_text(BLOBS)
    (project / "dvc.yaml").write_text(
        f"stages:\n  blobs:\n    cmd: {sys.executable} make_blobs.py blobs {files} {size} "
        f"one.bin\n    deps: [make_blobs.py]\n    outs: [blobs, one.bin]\n")
    case = TransferCase(project, server, s3, set())
    for command in (["dvc", "init", "--no-scm", "-q"], ["dvc", "repro", "-q"],
                    ["dvc", "remote", "add", "-d", "storage", S3_URL]):
        call(command, project, case.env())
    case.push_seconds = case.timed("push")
    case.keys = case.remote_keys()
    case.pull_seconds = case.timed("pull")
    assert outputs_match_lock(project) == []
    return case


def damaged_remote_objects(case: TransferCase) -> list[str]:
    """Objects under the remote's prefix that do not hash to their own name (a `.dir`
    listing too: its name is the md5 of its bytes), or that are not DVC objects at all."""
    client, broken = case.s3.client(), []
    for key in sorted(case.remote_keys()):
        name = key[len(LAYOUT):].replace("/", "", 1)
        if not key.startswith(LAYOUT) or not re.fullmatch(r"[0-9a-f]{32}(\.dir)?", name):
            broken.append(f"not a DVC object on the remote: {key}")
            continue
        body = client.get_object(Bucket="textclf", Key=f"{case.store}/{key}")["Body"].read()
        if hashlib.md5(body).hexdigest() != name.removesuffix(".dir"):
            broken.append(f"damaged object on the remote: {key} ({len(body)} bytes)")
    return broken


def cached_objects(project: Path, pattern: str = "*") -> list[Path]:
    root = project / ".dvc" / "cache" / "files" / "md5"
    return [p for p in root.rglob(pattern) if p.is_file()] if root.is_dir() else []


def dvc_scratch_left(project: Path) -> list[str]:
    """DVC's own scratch (`NAME.<uuid>.tmp`, dvc-objects `tmp_fname`) in the workspace,
    plus textclf's (`scratch_left`); `damaged_cache_objects` finds it in the cache."""
    found = [str(p.relative_to(project)) for p in project.rglob("*.tmp")
             if not p.relative_to(project).as_posix().startswith(".dvc/")]
    return found + scratch_left(project)


def transfer_trial(case: TransferCase, direction: str, fault: str,
                   rng: random.Random) -> Trial:
    """One fault in `dvc push` (into an empty folder) or `dvc pull` (into an empty cache
    and workspace) at a random moment of an uninterrupted run's length: SIGKILL or SIGTERM
    of its group, or the endpoint lost (the server stops, cutting open connections, and
    comes back on the same port with the same objects once dvc has ended); or
    `sigkill_downloading`, SIGKILL the moment a pull's download is under way. Then the
    same command again and the invariants."""
    trial = Trial(direction, fault, f"delete DVC's data index, then the same `dvc {direction}` "
                  "again" + ("" if direction == "push" else ", and once more if it fails its "
                             "checkout (deleting the checkout scratch it names as unsaved)"))
    if direction == "push":
        if len(cached_objects(case.project)) < len(case.keys):
            # An earlier trial's recovery failed: the stage's seeded files again.
            run_job([DVC, "repro", "-f", "-q"], case.project, case.env())
        case.new_store()
    else:
        if case.remote_keys() != case.keys:
            case.timed("push")
        case.empty_local()
    seconds = case.push_seconds if direction == "push" else case.pull_seconds
    job = Job(case.command(direction), case.project, case.env())
    if fault == "sigkill_downloading":
        # The moment a download is under way: a `.tmp` beside the cache's objects.
        trial.landed = wait_for(lambda: list(cached_objects(case.project, "*.tmp")), job, 120)
    else:
        time.sleep(rng.uniform(0, seconds))
    trial.at_s = time.monotonic() - job.started
    if fault == "endpoint_lost":
        trial.landed = job.proc.poll() is None
        case.server.stop()
        code = job.wait(120)
        case.server.start()
        # Exit 0 is right if every request had been answered before the endpoint went.
        if trial.landed and code == 0 and transfer_unfinished(case, direction):
            trial.broken.append(f"dvc {direction} exited 0 with its endpoint lost and "
                                f"the transfer unfinished")
    else:
        trial.landed = job.signal(signal.SIGTERM if fault == "sigterm" else signal.SIGKILL) \
            and trial.landed
        code = job.wait(120)
    if code is None:
        trial.broken.append(f"dvc {direction} did not end within 120 s of the fault")
        job.signal(signal.SIGKILL)
        job.wait(30)
    trial.broken += job.leftovers()
    if fault == "sigkill_downloading":
        # Landed only if the kill caught a download: its scratch is still there.
        trial.landed = trial.landed and bool(cached_objects(case.project, ".*.tmp"))
    done = case.remote_keys() if direction == "push" else cached_objects(case.project)
    trial.done = f"{len(done)}/{len(case.keys)} objects"
    trial.broken += [f"after the fault: {b}" for b in damaged_remote_objects(case)]
    trial.broken += [f"after the fault: {b}" for b in damaged_cache_objects(case.project)
                     if b.startswith("damaged")]
    code, output, orphans, again = recover_transfer(case, direction)
    trial.broken += orphans
    if code != 0:
        trial.broken.append(f"recovery `dvc {direction}` exited {code}: {last_error(output)}")
    trial.broken += check_transfer(case)
    if trial.broken:
        trial.said = " / ".join(line for line in output.splitlines()[-3:] if line.strip())
    if again:
        trial.said = f"{RUN_AGAIN}: {again}" + (f" / {trial.said}" if trial.said else "")
    for scratch in cached_objects(case.project, ".*.tmp"):
        scratch.unlink()                  # counted above; not the next trial's to count
    return trial


# DVC 3.67's partial view after a kill (docs/durability.md, "`dvc push` / `dvc pull`"): a
# push collects what to send into its data index (<site cache>/index/data, sqlite) one
# entry at a time, each saved at once, and the next push trusts an entry it finds there:
# after a push killed while collecting, the next one uploads only the objects the entry
# lists, then the folder's .dir, after which `dvc status -c` and every later push take the
# folder as whole on the remote. The documented recovery deletes that index first (it is
# a cache; `dvc doctor` names the folder), then runs the command again; a pull that still
# fails its checkout, or refuses the checkout scratch a killed pull left as "unsaved
# files", is run once more (after deleting that scratch): tolerated and counted.
RUN_AGAIN = "the documented recovery ran dvc again"
UNSAVED = "Can't remove the following unsaved files"


def drop_data_index(project: Path, environ: dict[str, str]) -> list[str]:
    """Delete DVC's data index as the documented recovery does: `rm -rf "$(dvc doctor |
    sed -n 's/^Repo.site_cache_dir: //p')/index/data"`; what went wrong, if anything."""
    code, output, orphans = run_job([DVC, "doctor"], project, environ)
    found = re.search(r"^Repo\.site_cache_dir: (.+)$", output, re.MULTILINE)
    if code != 0 or not found:
        return orphans + [f"`dvc doctor` named no Repo.site_cache_dir (exit {code}): "
                          f"{output.strip()[-200:]}"]
    shutil.rmtree(Path(found.group(1).strip()) / "index" / "data", ignore_errors=True)
    return orphans


def recover_transfer(case: TransferCase, direction: str,
                     most: int = 3) -> tuple[int | None, str, list[str], str]:
    """The documented recovery: DVC's data index deleted, the same command again, and once
    more while a pull fails its checkout; (exit code, last output, orphans, what was run
    again and why, or "")."""
    orphans = drop_data_index(case.project, case.env())
    again: list[str] = []
    for _ in range(most):
        code, output, left = run_job(case.command(direction), case.project, case.env())
        orphans += left
        if direction == "pull" and code != 0 and UNSAVED in output:
            scratch = [p for p in case.project.rglob(".*.tmp")
                       if not p.relative_to(case.project).as_posix().startswith(".dvc/")]
            for path in scratch:
                path.unlink()
            again.append(f"a pull refused its own checkout scratch as unsaved: "
                         f"{[str(p.relative_to(case.project)) for p in scratch]}, deleted")
        elif direction == "pull" and code != 0 and "Checkout failed" in output:
            again.append("a pull failed its checkout")
        else:
            break
    return code, output, orphans, "; ".join(again)


# DVC 3.67 on a full cache (docs/durability.md): `dvc repro` logs "ERROR: failed to
# transfer ..." for each object the cache refused, yet records the stage in dvc.lock, runs
# the next ones and exits 0 (`Output.commit` drops the failed objects `transfer` returns);
# and each refused copy leaves its `.<random>.tmp` in the cache (treeverse/dvc#5355).
DVC_EXITED_0 = "dvc repro exited 0 with"
# Broken invariants that are DVC 3.67's documented defects (docs/durability.md), by the
# words the checks use: counted apart from textclf's in the benchmark's table. Only DVC
# writes `.tmp` scratch into its cache, so any found there is DVC's.
DVC_DEFECTS = {
    "scratch in the DVC cache: ": "scratch left in the DVC cache (treeverse/dvc#5355)",
    DVC_EXITED_0: "a full cache: exit 0 with objects missing (treeverse/dvc#10413)",
    DVC_NULL_PATH: "a null interpolated into a path: 'unexpected error' (treeverse/dvc#5006)",
    DVC_OVERLAP: "a dependency holding an output: an error naming neither (no upstream issue)",
}


def dvcs_defect(broken: str) -> str | None:
    """The documented DVC defect a broken invariant is, or None (then it is textclf's)."""
    return next((defect for words, defect in DVC_DEFECTS.items() if words in broken), None)


def transfer_unfinished(case: TransferCase, direction: str) -> bool:
    if direction == "push":
        return case.remote_keys() != case.keys
    return len(cached_objects(case.project)) < len(case.keys) \
        or bool(outputs_match_lock(case.project))


def check_transfer(case: TransferCase) -> list[str]:
    """After recovery, either way: the remote holds every object, each intact; `dvc status
    -c` in sync; the workspace as dvc.lock records it, the cache intact, no scratch."""
    broken = damaged_remote_objects(case)
    missing = sorted(case.keys - case.remote_keys())
    if missing:
        broken.append(f"{len(missing)} objects not on the remote: {missing[:3]}")
    code, output, orphans = run_job([DVC, "status", "-c", "--json"], case.project, case.env())
    broken += orphans
    if code != 0 or output.strip().splitlines()[-1:] != ["{}"]:   # JSON after any warning
        broken.append(f"dvc status -c is not in sync: {output.strip()[:300]}")
    broken += outputs_match_lock(case.project)
    broken += damaged_cache_objects(case.project)
    if dvc_scratch_left(case.project):
        broken.append(f"scratch left in the project: {dvc_scratch_left(case.project)[:4]}")
    return broken
