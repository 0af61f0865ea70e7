"""Shared set-up for the benchmark scripts: data, machine facts, summaries."""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SST5 = REPO.parent / "shared" / "data" / "sst5"
LABELS = ["0", "1", "2", "3", "4"]


def sst5_or_standin(n_train: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """First `n_train` shuffled SST-5 training sentences and the dev set, or a stand-in.

    The stand-in draws sentence lengths like SST-5's (about 19 words on average)
    from the demo data's words; its labels are random, so accuracy means nothing there.
    """
    if (SST5 / "train.csv").is_file():
        train = pd.read_csv(SST5 / "train.csv").sample(frac=1, random_state=seed)
        dev = pd.read_csv(SST5 / "dev.csv")
        frames = [train.iloc[:n_train], dev]
        source = f"SST-5 (first {n_train} shuffled training sentences; dev {len(dev)})" \
            if n_train else f"SST-5 dev ({len(dev)} sentences)"
    else:
        rng = np.random.default_rng(seed)
        words = " ".join(pd.read_csv(REPO / "data/reviews.csv")["text"]).split()
        frames = []
        for n in (n_train, 1101):
            lengths = np.clip(rng.gamma(4.0, 4.8, size=n).astype(int), 2, 60)
            frames.append(pd.DataFrame({
                "text": [" ".join(rng.choice(words, size=k)) for k in lengths],
                "label": rng.integers(0, 5, size=n)}))
        source = "generated stand-in (SST-5 not found; accuracies are meaningless)"
    for frame in frames:
        frame["label"] = frame["label"].astype(str)
    return frames[0].reset_index(drop=True), frames[1].reset_index(drop=True), source


def cpu_kind(flags: frozenset[str] | None) -> str:
    """The CPU kinds whose speed and int8 answers differ (README and benchmarks/README.md
    state figures per kind): AMX; AVX-512 with BF16; AVX-512 with or without VNNI; AVX2
    only (int8 kernels saturate there, textclf.model.engines.onnx_int8)."""
    if flags is None:
        return "unknown (no CPU flags readable)"
    if "amx_bf16" in flags:
        return "AMX"
    if "avx512_bf16" in flags:
        return "AVX-512 with BF16, no AMX"
    if "avx512f" in flags:
        return ("AVX-512 with VNNI, no BF16" if "avx512_vnni" in flags
                else "AVX-512, no VNNI, no BF16")
    if "avx2" in flags:
        return "AVX2 with AVX-VNNI, no AVX-512" if "avx_vnni" in flags else "AVX2 only"
    return "no AVX2"


def machine(with_torch: bool = True) -> str:
    """CPU model, the instruction sets that decide precision (AVX-512, its BF16, AMX) and
    cores: results are only comparable between machines with the same features."""
    from textclf.model.precision import cpu_facts

    cpu, flags = cpu_facts()
    kind = cpu_kind(flags)
    facts = (f"CPU kind: {kind}; {cpu} [flags: {' '.join(sorted(flags or ())) or 'unknown'}], "
             f"{os.cpu_count()} cores, python {platform.python_version()}")
    if with_torch:
        import torch

        facts += f", torch {torch.__version__} ({torch.get_num_threads()} threads)"
        if torch.cuda.is_available():
            facts += f"; GPU: {torch.cuda.get_device_name(0)}"
    return facts


def summary(values: list[float]) -> str:
    """Median and range, e.g. '101.3 (97.0-104.2)'."""
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def matmul_gflops(dtype, m: int, k: int, n: int, seconds: float = 1.0) -> float:
    """Sustained GFLOP/s of an (m x k) @ (k x n) matmul in `dtype`."""
    import torch

    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    for _ in range(3):
        a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * m * k * n * count / (time.perf_counter() - start) / 1e9
