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
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

log = logging.getLogger("textclf.serve")
Classify = Callable[[Sequence[str]], np.ndarray]  # texts -> probabilities (N, C)


@dataclass(frozen=True)
class BatchSettings:
    max_batch_size: int = 32   # texts per forward pass; 1 turns batching off
    max_wait_ms: float = 5.0   # how long the first text of a batch waits for company


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

    def __init__(self, classify: Classify, settings: BatchSettings):
        self._classify = classify
        self.settings = settings
        self._jobs: queue.Queue = queue.Queue()
        self._worker: Optional[threading.Thread] = None
        self.batches = 0  # forward passes run (tests read it)

    @property
    def running(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    def start(self) -> None:
        self._worker = threading.Thread(target=self._work, name="textclf-batcher", daemon=True)
        self._worker.start()

    def stop(self) -> None:
        """Finish the jobs already queued, then end the worker thread."""
        if self._worker is not None:
            self._jobs.put(STOP)
            self._worker.join()
            self._worker = None

    async def classify(self, texts: list[str]) -> np.ndarray:
        """Probabilities (len(texts), C) for `texts`, computed in a shared batch."""
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
            jobs = [job for job in batch if job is not STOP]
            if jobs:
                self._run(jobs)
            if stop:
                return

    def _run(self, jobs: list[Job]) -> None:
        texts = [text for job in jobs for text in job.texts]
        try:
            probs = self._classify(texts)
        except Exception as err:  # noqa: BLE001 - must reach the waiting requests
            if len(jobs) > 1:
                # One job's texts may be what broke the batch: retry each alone, so a
                # bad request fails by itself and the others are still answered.
                for job in jobs:
                    self._run([job])
                return
            log.exception("classifying %d texts failed", len(texts))
            _resolve(jobs[0], error=err)
            return
        self.batches += 1
        start = 0
        for job in jobs:
            _resolve(job, result=probs[start:start + len(job.texts)])
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
