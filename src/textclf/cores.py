"""Threads for processes that share a machine: the cores this process may run on (its CPU
affinity, which a container or a Kubernetes pod sets, unlike `os.cpu_count()`), shared
among the processes that run side by side. On 2 cores, two PyTorch processes with default
threading slow each other down many times over; each gets its share instead."""

from __future__ import annotations

import os


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:      # not on Linux
        return os.cpu_count() or 1


def threads_asked(env=os.environ) -> int | None:
    """OMP_NUM_THREADS as a whole number, None where unset or not one."""
    value = env.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isascii() and value.isdigit() else None


def threads_each(processes: int, threads: int | None = None) -> int:
    """OMP_NUM_THREADS for each of `processes` that run at once: their share of `threads`
    (default: the available cores), at least 1."""
    return max(1, (threads or available_cores()) // max(1, processes))
