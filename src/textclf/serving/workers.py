"""Several worker processes behind one port (`textclf serve --workers N`).

The parent process is uvicorn's own multiprocess supervisor (what `uvicorn.run(...,
workers=N)` runs): it binds the port once, spawns N workers that accept on that socket,
and restarts a worker that dies (uvicorn logs "Child process [PID] died" on stderr).
SIGTERM or SIGINT to the parent: it closes its copy of the socket, each worker stops
accepting, finishes its requests in flight (up to `--grace-seconds`) and exits, then the
parent exits 0; from the moment no worker accepts, the port refuses new connections
(`ClosingSupervisor`, the one change to uvicorn's supervisor). SIGHUP to the parent:
uvicorn replaces the workers one at a time, each new one started and ready before the old
one stops, so they load the model folder as it is now without downtime; a new worker that
fails to start leaves the old ones serving. A worker that fails before it serves (a
model folder that does not load) stops the whole server: every restart would fail the
same way (uvicorn's rule), and the parent exits 2 with the worker's error.

Each worker is a whole server (model, batcher with its share of the threads, event loop)
built from the same flags; what they share lives on disk:

- the prediction and feedback logs: one folder, appended under a file lock
  (textclf.serving.log), so each request's lines are written once and whole;
- which requests were answered: each worker reads the log from where it left off when
  a label names a request it does not know (textclf.serving.feedback);
- metrics: prometheus-client's multiprocess files (textclf.serving.metrics);
- readiness and model versions: a `WorkerGroup` folder. /v2/health/ready answers 200 once
  all N workers are ready; a model loaded through one worker
  (`POST /v2/repository/models/{name}/load`) is announced there, and the other workers
  load the folder too within about a second.

The parent makes that folder (with the metrics folder inside) and removes it at exit.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from textclf.errors import UserError

GROUP_ENV = "TEXTCLF_SERVE_WORKERS"       # the worker processes' settings (JSON)
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus-client when imported
# How long a worker may take to start serving before uvicorn gives up on it (SIGHUP's
# rolling restart waits this long for each new one), and to answer uvicorn's health
# ping before it is taken for hung and killed. Loading a model on a busy machine takes
# tens of seconds; uvicorn's own default, 5 s, would abort every reload. Longer would
# leave a crash found late: the ping of a worker that dies as it is asked waits it out.
START_SECONDS = 60
_READY = re.compile(r"ready-(\d+)")


@dataclass
class WorkerGroup:
    """What the workers of one server share: a folder with a file per ready worker and
    the model generation (a counter, bumped whenever a worker loads a new version)."""
    folder: Path
    workers: int
    generation: int = 0     # the last generation this process loaded or was told of

    @property
    def metrics(self) -> Path:
        return self.folder / "metrics"

    @property
    def _generation_file(self) -> Path:
        return self.folder / "model-generation"

    def to_env(self, settings: dict) -> str:
        return json.dumps({"folder": str(self.folder), "workers": self.workers,
                           "settings": settings})

    @classmethod
    def from_env(cls) -> tuple["WorkerGroup", dict]:
        """This worker's group and the server's settings (serve's flags)."""
        found = json.loads(os.environ[GROUP_ENV])
        group = cls(Path(found["folder"]), found["workers"])
        group.generation = group._read_generation()
        return group, found["settings"]

    def joined(self) -> None:
        (self.folder / f"ready-{os.getpid()}").touch()
        if self.all_ready():
            (self.folder / "served").touch()      # from now on the server is up

    def left(self) -> None:
        (self.folder / f"ready-{os.getpid()}").unlink(missing_ok=True)

    def ready(self) -> int:
        """Workers ready to answer now (a killed worker's file does not count)."""
        return sum(1 for path in self.folder.iterdir()
                   if (found := _READY.fullmatch(path.name)) and process_alive(int(found[1])))

    def all_ready(self) -> bool:
        return self.ready() >= self.workers

    def announce_load(self) -> None:
        """This worker answers with a new version: the others should load it too."""
        with open(self._generation_file, "a+") as file:
            fcntl.flock(file, fcntl.LOCK_EX)
            file.seek(0)
            self.generation = _number(file.read()) + 1
            file.seek(0)
            file.truncate()
            file.write(str(self.generation))

    def load_announced(self) -> bool:
        """Whether another worker loaded a version since this one last looked."""
        now = self._read_generation()
        if now == self.generation:
            return False
        self.generation = now
        return True

    def _read_generation(self) -> int:
        try:
            with open(self._generation_file) as file:
                fcntl.flock(file, fcntl.LOCK_SH)
                return _number(file.read())
        except FileNotFoundError:
            return 0

    def startup_failed(self, message: str) -> None:
        """Leave the worker's reason for the parent: before the server was up, the parent
        stops and exits 2 with it (see the module doc); after, it was a replacement (a
        SIGHUP's rolling restart that uvicorn aborts, the old workers serving on), and the
        parent only says so at exit."""
        name = "replacement-error" if (self.folder / "served").exists() else "startup-error"
        (self.folder / name).write_text(message)

    def startup_error(self) -> Optional[str]:
        path = self.folder / "startup-error"
        return path.read_text() if path.exists() else None

    def replacement_error(self) -> Optional[str]:
        path = self.folder / "replacement-error"
        return path.read_text() if path.exists() else None


class WorkerHttp:
    """uvicorn's `http` setting in a worker, named by import path (a class made at run
    time cannot be): each connection gets the guarded protocol class this worker built
    (`use_protocol`; textclf.serving.connections). uvicorn only calls the class."""
    guarded: Optional[type] = None

    def __new__(cls, **kwargs):
        return cls.guarded(**kwargs)


def use_protocol(guarded: type) -> None:
    WorkerHttp.guarded = guarded


def _supervisor_class():
    from uvicorn.supervisors import Multiprocess

    class ClosingSupervisor(Multiprocess):
        """uvicorn's supervisor, except that when the server stops it closes its own copy
        of the listening socket before it stops the workers. uvicorn's keeps it until
        every worker has exited, so a client connecting once the workers had stopped
        accepting (while they finished their requests in flight) was queued on a socket
        no one would accept from, then reset when the parent exited; now the port refuses
        it at once, as a lone server's does, and the client can go elsewhere."""

        def terminate_all(self) -> None:      # called only when the server stops
            for sock in self.sockets:
                sock.close()
            super().terminate_all()

    return ClosingSupervisor


def run_parent(workers: int, settings: dict, app: str) -> None:
    """Serve `app` (a factory's import path) from `workers` processes on the port in
    `settings` (serve's flags); returns when they have stopped. UserError if they could
    not start."""
    import uvicorn

    group = WorkerGroup(Path(tempfile.mkdtemp(prefix="textclf-serve-")), workers)
    try:
        group.metrics.mkdir()
        os.environ[METRICS_ENV] = str(group.metrics)
        os.environ[GROUP_ENV] = group.to_env(settings)
        # What uvicorn.run(app, workers=N, ...) does, with ClosingSupervisor.
        config = uvicorn.Config(app, factory=True, workers=workers, host=settings["host"],
                                port=settings["port"], http=f"{__name__}:WorkerHttp",
                                loop=settings["loop"], lifespan="on",
                                access_log=settings["access_log"],
                                timeout_graceful_shutdown=settings["grace_seconds"],
                                timeout_worker_healthcheck=START_SECONDS)
        _supervisor_class()(config, sockets=[config.bind_socket()]).run()
        error, replaced = group.startup_error(), group.replacement_error()
    finally:
        shutil.rmtree(group.folder, ignore_errors=True)
    if error is not None:
        raise UserError(f"the workers could not start: {error}")
    if replaced is not None:
        print(f"serve: note: a replacement worker could not start ({replaced}); the "
              f"workers serving before kept serving", file=sys.stderr)


def _number(text: str) -> int:
    return int(text) if text.strip().isascii() and text.strip().isdigit() else 0


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)             # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:         # another user's process took the number
        pass
    return True
