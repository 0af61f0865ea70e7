"""Training on several processes with torch.distributed: a thin adapter over the loop.

`train.processes: N` starts N processes the way `torchrun` does (this module calls
`python -m torch.distributed.run --standalone`), one per GPU on a GPU machine, N CPU
processes otherwise (gloo on CPU, nccl on CUDA). Started by `torchrun` yourself
(`torchrun --nnodes 2 --nproc-per-node 4 ... -m textclf.train ...`) it joins that group.

`train.batch_size` is the GLOBAL batch: every process builds the same batches and takes
its share of each (rows rank, rank + N, ...), and the loss is weighted so that the
averaged gradient is the gradient of the whole batch. One step therefore does the same
update whatever N is, and results stay comparable across N: the same up to float
summation order without dropout, as another seed would make them with it (each process
draws its own dropout masks).
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import os
import signal
import subprocess
import sys
from dataclasses import dataclass

import torch

from textclf.cores import threads_asked, threads_each

# A rank that dies leaves the others waiting in a collective; torchrun stops them when it
# sees the failure, and this timeout bounds the wait if it cannot.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=10)


def launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def launch(processes: int, argv: list[str]) -> int:
    """Run `textclf train argv` in `processes` processes through torchrun; its exit code.

    torchrun runs in a session of its own, and a SIGTERM, SIGHUP or Ctrl-C to this process
    is passed to it once (SIGHUP as SIGTERM): it passes it to every training process, which
    checkpoints and exits as one process does (exit 128 + the signal); if this process is
    killed outright, torchrun gets SIGTERM from the kernel (`stop_with_parent`). Without
    that, a SIGTERM (what Kubernetes, a scheduler or `dvc queue kill` send) stopped this
    process and left the training processes running unsupervised; a Ctrl-C reached them
    twice (from the terminal and from torchrun), the second meaning "stop now"."""
    env = dict(os.environ)
    # On a CPU, N processes share the cores (or the threads asked for): each its share.
    env["OMP_NUM_THREADS"] = str(threads_each(processes, threads_asked(env)))
    command = [sys.executable, "-m", __name__, "--standalone",
               f"--nproc-per-node={processes}", "-m", "textclf.train", *argv]
    print(f"train: starting {processes} processes (torch.distributed, "
          f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']})", flush=True)
    torchrun = subprocess.Popen(command, env=env, start_new_session=True,
                                preexec_fn=stop_with_parent())
    asked: list[int] = []

    def forward(signum, frame) -> None:
        if not asked:       # torchrun passes the signal to the processes: one they handle
            asked.append(signum)
            torchrun.send_signal(signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in STOP_SIGNALS}
    try:
        code = torchrun.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if asked:
        return 128 + asked[0]
    if code != 0:
        # torchrun stops every process once one fails; say so in one line after its report.
        print(f"error: a training process failed (exit code {code}); torchrun stopped the "
              f"others: the first failure is reported above", file=sys.stderr)
    return code


# What stops a run, passed on to torchrun: SIGHUP too (a closed terminal or ssh session),
# which without a session of its own would have reached the whole group.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
PR_SET_PDEATHSIG = 1     # linux/prctl.h


def stop_with_parent():
    """What torchrun's process runs before it starts: ask for SIGTERM when this launcher
    dies (kill -9, out of memory), so that the training processes are never left running
    unsupervised. Linux only (prctl); elsewhere nothing."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl    # libc, loaded here, not after fork
    except (OSError, AttributeError):
        return None
    return lambda: prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def torchrun_main() -> None:
    """torchrun (`python -m torch.distributed.run`), ending in an exit status instead of
    a traceback when a signal stops it or a training process fails (the processes have
    said why already)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main

    try:
        main(sys.argv[1:])
    except SignalException as stop:
        raise SystemExit(128 + int(stop.sigval)) from None
    except ChildFailedError as failed:
        codes = [failure.exitcode for failure in failed.failures.values()]
        raise SystemExit(next((c for c in codes if c > 0), 1)) from None


@dataclass(frozen=True)
class Workers:
    """This process's place in the group; the single-process case is rank 0 of 1."""
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], float]:
        """This rank's rows of a global batch, and the loss weight that makes the
        averaged gradient equal the whole batch's mean-loss gradient."""
        if self.size == 1:
            return batch, 1.0
        total = len(batch["labels"])
        rows = torch.arange(self.rank, total, self.size)
        if len(rows) == 0:  # a last batch smaller than the group: take part, add nothing
            return {k: v[:1] for k, v in batch.items()}, 0.0
        return {k: v[rows] for k, v in batch.items()}, len(rows) * self.size / total

    def total(self, value: float) -> float:
        """Sum of `value` over all ranks."""
        if self.size == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64)
        torch.distributed.all_reduce(tensor)
        return float(tensor)

    def any(self, flag: bool) -> bool:
        """True on every rank if it is true on any: ranks must stop at the same step."""
        return self.total(1.0 if flag else 0.0) > 0 if self.size > 1 else flag


@contextlib.contextmanager
def process_group(device_type: str):
    """Join the torchrun group if launched by it (yield its Workers), else yield Workers()."""
    if not launched_by_torchrun():
        yield Workers()
        return
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    torch.distributed.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
    try:
        yield Workers(torch.distributed.get_rank(), torch.distributed.get_world_size())
    finally:
        torch.distributed.destroy_process_group()


def device_for(workers: Workers, device: torch.device) -> torch.device:
    if device.type == "cuda" and workers.size > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def wrap(model: torch.nn.Module, workers: Workers, device: torch.device) -> torch.nn.Module:
    """The module the loop runs forward/backward through: DDP when there are several ranks."""
    if workers.size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                   else None)


if __name__ == "__main__":
    torchrun_main()
