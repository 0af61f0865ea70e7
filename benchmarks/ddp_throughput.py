"""Training throughput with `train.processes` 1 vs 2 (torch.distributed, gloo) on this CPU.

Whole `textclf train` processes, as a user runs them, alternating 1 and 2 processes per
round; same data, params, global batch. On a 2-core CPU two processes share the same
cores, so the comparison shows the cost of the data-parallel machinery, not a gain.

    python benchmarks/ddp_throughput.py --samples 1000 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from _common import LABELS, REPO, machine, sst5_or_standin, summary
from textclf.data.dataset import write_labels, write_split


def run(folder: Path, processes: int) -> float:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"].update(epochs=1, processes=processes, resume=False)
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // processes)),
           "TEXTCLF_CHECKPOINT_DIR": str(folder / "checkpoints")}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "textclf.train", "--params",
                    str(folder / "params.yaml"), "--train", str(folder / "train.parquet"),
                    "--val", str(folder / "val.parquet"), "--labels",
                    str(folder / "labels.json"), "--model-dir", str(folder / f"m{processes}"),
                    "--live-dir", str(folder / f"l{processes}")],
                   check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1000, help="training sentences")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    train, dev, source = sst5_or_standin(args.samples)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_split(train, folder / "train.parquet")
        write_split(dev.iloc[:200], folder / "val.parquet")
        write_labels(LABELS, folder / "labels.json")
        times = {1: [], 2: []}
        for _ in range(args.rounds):
            for processes in times:
                times[processes].append(run(folder, processes))
    print(f"{machine()}\ndata: {source}; 1 epoch, batch 32 (global), default model, whole "
          f"`textclf train` processes\n")
    print("| processes | seconds, median (range) | sentences/s |")
    print("| --- | --- | --- |")
    for processes, seconds in times.items():
        print(f"| {processes} | {summary(seconds)} | "
              f"{args.samples / sorted(seconds)[len(seconds) // 2]:.1f} |")


if __name__ == "__main__":
    main()
