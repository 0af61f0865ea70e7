"""Dynamic batching: texts from concurrent requests share one forward pass.

Request handlers (on the asyncio event loop) put a job on a queue and await its future.
One worker thread takes the first waiting job, then keeps taking jobs until the batch
holds `max_batch_size` texts or `max_wait_ms` have passed since the first one, runs one
`classify` call on all their texts (which length-sorts them: `textclf.model.engines.pytorch.predict_proba`)
and resolves each job's future with its own rows. While the model runs, new jobs wait in
the queue, so under load batches fill without waiting and when idle a lone request waits
at most `max_wait_ms`. With `max_wait_ms` 0 a batch is whatever queued up during the
previous forward pass: no added latency, smaller batches.

A queue.Queue rather than an asyncio.Queue: its consumer is a thread, and asyncio queues
are not thread-safe. Results go back with `loop.call_soon_threadsafe`.

The model is an `Engine` (anything with `probabilities(texts)`); `replace` swaps it for a
new one (a new model version) between two batches: each batch runs on one engine, and
each job gets back the engine that answered it with its rows, so an answer's labels and
version always match its probabilities. The worker thread never dies of an error: a
failed batch fails its own requests, and the next batch runs.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass
import math
from typing import Callable, Optional, Protocol, Sequence

import numpy as np

log = logging.getLogger("textclf.serve")
MAX_WAIT_MS = 60_000  # a minute: waiting longer for company only makes every answer late


class Engine(Protocol):
    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """texts -> probabilities (N, C)"""


# Called after each forward pass with its texts and seconds (the server's metrics).
OnBatch = Callable[[int, float], None]


@dataclass(frozen=True)
class BatchSettings:
    max_batch_size: int = 32   # texts per forward pass; 1 turns batching off
    max_wait_ms: float = 5.0   # how long the first text of a batch waits for company

    def __post_init__(self):
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, found {self.max_batch_size}")
        if not (math.isfinite(self.max_wait_ms) and 0 <= self.max_wait_ms <= MAX_WAIT_MS):
            raise ValueError(f"max_wait_ms must be a number from 0 to {MAX_WAIT_MS}, found "
                             f"{self.max_wait_ms}")


@dataclass
class Job:
    texts: list[str]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


STOP = object()  # put on the queue by stop(): finish what is queued, then quit


def take_batch(jobs: "queue.Queue", settings: BatchSettings,
               carry: Optional[Job]) -> tuple[list, Optional[Job]]:
    """Jobs for the next forward pass, and a job left over for the one after.

    Blocks for the first job (`carry`, if one was left over), then takes jobs while they
    fit in `max_batch_size` texts and `max_wait_ms` has not passed. A job larger than
    the batch goes alone (the model still runs it in chunks). `STOP` ends the batch and
    is returned as the last item, so the caller can finish and quit.
    """
    first = carry if carry is not None else jobs.get()
    batch = [first]
    if first is STOP:
        return batch, None
    size = len(first.texts)
    deadline = time.monotonic() + settings.max_wait_ms / 1000
    while size < settings.max_batch_size:
        try:
            job = jobs.get(timeout=max(deadline - time.monotonic(), 0))
        except queue.Empty:
            break
        if job is STOP:
            batch.append(job)
            break
        if size + len(job.texts) > settings.max_batch_size:
            return batch, job
        batch.append(job)
        size += len(job.texts)
    return batch, None


class DynamicBatcher:
    """Submit texts from the event loop; one worker thread classifies them in batches."""

    def __init__(self, engine: Engine, settings: BatchSettings,
                 on_batch: Optional[OnBatch] = None):
        self.engine = engine
        self.settings = settings
        self._on_batch = on_batch
        self._jobs: queue.Queue = queue.Queue()
        self._worker: Optional[threading.Thread] = None
        self.batches = 0  # forward passes run (tests read it)

    def replace(self, engine: Engine) -> None:
        """Answer with `engine` from the next batch on (the batch running finishes on the
        old one). One reference assignment: atomic for the worker thread."""
        self.engine = engine

    @property
    def queued(self) -> int:
        """Requests waiting for a batch (approximate, as queue sizes are)."""
        return self._jobs.qsize()

    @property
    def running(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    def start(self) -> None:
        self._worker = threading.Thread(target=self._work, name="textclf-batcher", daemon=True)
        self._worker.start()

    def stop(self) -> None:
        """Finish the jobs already queued (those still awaited), then end the worker
        thread."""
        if self._worker is not None:
            self._jobs.put(STOP)
            self._worker.join()
            self._worker = None

    async def classify(self, texts: list[str]) -> tuple[Engine, np.ndarray]:
        """(the engine that answered, probabilities (len(texts), C)) for `texts`, computed
        in a shared batch."""
        if not self.running:
            raise RuntimeError("the batcher is not running")
        loop = asyncio.get_running_loop()
        job = Job(list(texts), loop.create_future(), loop)
        self._jobs.put(job)
        return await job.future

    def _work(self) -> None:
        carry = None
        while True:
            batch, carry = take_batch(self._jobs, self.settings, carry)
            stop = batch[-1] is STOP
            # A cancelled job's request is gone (its client left, or --grace-seconds ran
            # out at shutdown): no forward pass for it. Read from this thread, the flag
            # can be a moment late, which costs only the work it would have saved.
            jobs = [job for job in batch if job is not STOP and not job.future.cancelled()]
            if jobs:
                try:
                    self._run(jobs, self.engine)
                except Exception as err:  # noqa: BLE001 - the worker outlives any error
                    log.exception("batcher: a batch of %d requests failed", len(jobs))
                    for job in jobs:
                        _resolve(job, error=err)
            if stop:
                return

    def _run(self, jobs: list[Job], engine: Engine) -> None:
        texts = [text for job in jobs for text in job.texts]
        started = time.perf_counter()
        try:
            probs = engine.probabilities(texts)
        except Exception as err:  # noqa: BLE001 - must reach the waiting requests
            if len(jobs) > 1:
                # One job's texts may be what broke the batch: retry each alone, so a
                # bad request fails by itself and the others are still answered.
                for job in jobs:
                    self._run([job], engine)
                return
            log.exception("classifying %d texts failed", len(texts))
            _resolve(jobs[0], error=err)
            return
        self.batches += 1
        if self._on_batch is not None:
            self._on_batch(len(texts), time.perf_counter() - started)
        start = 0
        for job in jobs:
            _resolve(job, result=(engine, probs[start:start + len(job.texts)]))
            start += len(job.texts)


def _resolve(job: Job, result=None, error: Optional[BaseException] = None) -> None:
    def settle() -> None:
        if job.future.done():  # the request was cancelled (client gone, shutdown)
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)

    job.loop.call_soon_threadsafe(settle)
