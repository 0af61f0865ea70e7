"""Data preparation at scale: the prepare stage on 10k, 100k and 1M generated rows.

Each size runs `textclf prepare` as its own process (as DVC runs it); prints wall
time and peak memory (max RSS), and time per row to show growth is linear.

    python benchmarks/prepare_scale.py --sizes 10000 100000 1000000 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _common import REPO, machine

LABELS = ["very negative", "negative", "neutral", "positive", "very positive"]


def write_rows(path: Path, n: int, seed: int = 0) -> None:
    """n reviews built from the demo data's words, with 1% exact duplicates."""
    rng = np.random.default_rng(seed)
    words = np.array(" ".join(pd.read_csv(REPO / "data/reviews.csv")["text"]).split())
    lengths = np.clip(rng.gamma(4.0, 4.0, size=n).astype(int), 3, 60)
    flat = rng.choice(words, size=int(lengths.sum()))
    cuts = np.cumsum(lengths)[:-1]
    texts = [f"{i} " + " ".join(chunk) for i, chunk in enumerate(np.split(flat, cuts))]
    labels = rng.choice(LABELS, size=n)
    dup = rng.choice(n, size=n // 100, replace=False)
    frame = pd.DataFrame({"text": texts, "label": labels})
    frame = pd.concat([frame, frame.iloc[dup]], ignore_index=True)
    frame.to_csv(path, index=False)


def run_prepare(folder: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one `textclf prepare` process.

    Linux carries a parent's peak RSS into a forked child's ru_maxrss, so the
    parent stays small: the rows are generated in a process of their own.
    """
    cmd = [sys.executable, "-m", "textclf.prepare", "--data", "rows.csv",
           "--out-dir", str(folder / "prepared"),
           "--stats", str(folder / "stats.json")]
    start = time.perf_counter()
    process = subprocess.Popen(cmd, cwd=folder, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"prepare failed with status {status}")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--generate", nargs=2, metavar=("PATH", "ROWS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        return write_rows(Path(args.generate[0]), int(args.generate[1]))
    print(f"machine: {machine(with_torch=False)}\n")
    print(f"{'rows':>9} {'file MB':>8} {'seconds (median, range)':>26} {'us/row':>7} "
          f"{'peak MB':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            folder = Path(tmp) / str(n)
            folder.mkdir()
            subprocess.run([sys.executable, __file__, "--generate", str(folder / "rows.csv"),
                            str(n)], check=True)
            (folder / "params.yaml").write_text(
                (REPO / "params.yaml").read_text().replace("data/reviews.csv", "rows.csv"))
            runs = [run_prepare(folder) for _ in range(args.repeats)]
            seconds = [s for s, _ in runs]
            median = statistics.median(seconds)
            size = (folder / "rows.csv").stat().st_size / 1e6
            print(f"{n:>9} {size:>8.1f} {median:>10.2f} ({min(seconds):.2f}-{max(seconds):.2f})"
                  f"{'':>5} {1e6 * median / n:>7.2f} {max(m for _, m in runs):>8.0f}", flush=True)


if __name__ == "__main__":
    main()
