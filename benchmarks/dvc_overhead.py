"""Pipeline overhead: what DVC adds on top of the stages' own work.

In a fresh git copy of the repository: (1) a no-op `dvc repro` (nothing changed),
(2) the four stage commands run directly, one after another, (3) `dvc repro -f`
and (4) `dvc exp run -f` doing the same work. Variants alternate; prints medians
and DVC's overhead as a share of the direct run.

    python benchmarks/dvc_overhead.py --rounds 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

from _common import REPO, machine, summary

ENV = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid",
       "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid"}


def timed(cmd: str, cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, shell=True, cwd=cwd, check=True, env=ENV,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def copy_project(dest: Path) -> None:
    ignore = shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.egg-info", "cache", "tmp",
                                    "prepared", "resampled", "classifier", "benchmarks")
    shutil.copytree(REPO, dest, ignore=ignore)
    for cmd in ("git init -q", "git add -A", "git commit -qm copy"):
        subprocess.run(cmd, shell=True, cwd=dest, check=True, env=ENV)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--noop-repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {machine(with_torch=False)}\n")
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    direct = " && ".join(stage["cmd"] for stage in stages.values())

    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "project"
        copy_project(project)
        timed("dvc repro", project)
        noop = [timed("dvc repro", project) for _ in range(args.noop_repeats)]
        print(f"no-op dvc repro: {summary(noop)} s (median, range of {len(noop)})", flush=True)
        times = {"direct": [], "dvc repro -f": [], "dvc exp run -f": []}
        for round_ in range(args.rounds):
            for name in times:
                times[name].append(timed(direct if name == "direct" else name, project))
                print(f"round {round_ + 1}: {name:15s} {times[name][-1]:.1f} s", flush=True)

    base = statistics.median(times["direct"])
    print("\nfull pipeline, seconds, median (range):")
    for name, values in times.items():
        extra = statistics.median(values) - base
        print(f"  {name:15s} {summary(values):20s} overhead {extra:+.1f} s "
              f"({extra / base:+.1%})")


if __name__ == "__main__":
    main()
