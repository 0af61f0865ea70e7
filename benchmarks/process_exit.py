"""What a process's exit costs once torch and transformers are loaded, and what
`gc.freeze()` (what the `textclf` console script does after a command) gives back.

Each round starts one Python process per way of ending, each loading a model folder with
`textclf.model.loading.load_classifier` (what `evaluate` and `predict` do) and then ending:
plainly; with `gc.freeze()` as its last statement; with `os._exit(0)` (the floor, not
used: it skips atexit handlers and finalizers). The time measured runs from the process's
last statement (a timestamp it prints) to its end as its parent sees it.

    python benchmarks/process_exit.py --rounds 3 [--model models/classifier]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from _common import REPO, machine, summary

ENDINGS = {
    "plain exit": "",
    "gc.freeze() (the textclf script)": "import gc; gc.freeze()",
    "os._exit(0) (floor, not used)": "import os; os._exit(0)",
}


def exit_seconds(model: str, ending: str) -> float:
    code = (f"from textclf.model.loading import load_classifier\nload_classifier({model!r})\n"
            f"import time; print(time.time(), flush=True)\n{ending}")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    ended = time.time()
    if done.returncode:
        raise SystemExit(f"the process failed:\n{done.stderr[-2000:]}")
    return ended - float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default=str(REPO / "models" / "classifier"),
                        help="a model folder (default: the one `dvc repro` writes)")
    args = parser.parse_args()
    print(f"machine: {machine()}\nmodel: {args.model}; {args.rounds} rounds\n")
    seconds = {name: [] for name in ENDINGS}
    for _ in range(args.rounds):            # the endings alternate within each round
        for name, ending in ENDINGS.items():
            seconds[name].append(exit_seconds(args.model, ending))
    print("| ending | exit ms, median (range) |\n| --- | --- |")
    for name, values in seconds.items():
        print(f"| {name} | {summary([v * 1000 for v in values])} |")


if __name__ == "__main__":
    main()
