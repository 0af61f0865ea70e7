"""Faults injected into the long-running paths, many times over (docs/durability.md).

    python benchmarks/fault_injection.py --faults 200 --seed 0
    python benchmarks/fault_injection.py --faults 40 --paths predict,serve --minutes 25
    python benchmarks/fault_injection.py --faults 20 --paths queue
    python benchmarks/fault_injection.py --faults 12 --paths queue --kinds sigterm
    python benchmarks/fault_injection.py --faults 12 --paths kfp
    python benchmarks/fault_injection.py --faults 30 --kinds enospc --minutes 15

Each fault: the path runs in a process group of its own, one fault comes at a seeded random
moment (SIGKILL of the group, SIGTERM, a file-size limit on what it writes, a full file
system (`enospc`: a tmpfs mounted on the folder it writes to, filling up part-way; needs
the right to mount, else reported as not run), a half-written params.yaml, a damaged
checkpoint, the S3 endpoint lost in a `dvc push`/`dvc pull` to moto on 127.0.0.1, SIGKILL or
SIGTERM of DVC's queue workers or of `textclf kfp run --local`),
then the documented recovery command runs and every invariant is checked
(tests/fault_harness.py, fault_sweeps.py for the queue and kfp, fault_enospc.py for
full disks; tests/test_faults.py samples them). Faults are dealt over the
paths in a seeded order; `--minutes` stops dealing once that much time has passed, and the
table says how many were injected.

Prints one line per fault as it goes, then a table: path, fault, injected (landed: a
signal sent after the run had ended did not), invariants broken, recovery command; and
every broken invariant in words.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import machine  # noqa: E402
import fault_enospc  # noqa: E402
import fault_harness as harness  # noqa: E402
import fault_sweeps as sweeps  # noqa: E402
from small_disk import mount_refused, mounts_under  # noqa: E402

# (path, fault, weight): how many of each per round; dvc's faults cost 3 to 5 times more.
KINDS = [("predict", "sigkill", 3), ("predict", "sigterm", 2), ("predict", "fsize", 2),
         ("predict", "enospc", 2),
         ("serve", "sigkill", 3), ("serve", "sigterm", 3), ("serve", "fsize", 2),
         ("serve", "enospc", 2),
         ("repro", "sigkill_train", 1), ("repro", "sigkill", 1), ("repro", "half_params", 1),
         ("repro", "damaged_checkpoint", 1), ("repro", "damaged_cache", 1),
         ("repro", "enospc", 1),
         ("push", "sigkill", 1), ("push", "sigterm", 1), ("push", "endpoint_lost", 1),
         ("pull", "sigkill", 1), ("pull", "sigterm", 1), ("pull", "endpoint_lost", 1),
         ("queue", "sigkill", 1), ("queue", "sigterm", 1),
         ("kfp", "sigkill", 1), ("kfp", "sigterm", 1)]


def schedule(faults: int, paths: set[str], seed: int,
             kinds_of: set[str] | None = None) -> list[tuple[str, str]]:
    """`faults` (path, fault) pairs: rounds of KINDS by weight (only the faults named in
    `kinds_of`, if given), each round shuffled."""
    rng = random.Random(seed)
    kinds = [(p, f) for p, f, w in KINDS
             if p in paths and (not kinds_of or f in kinds_of) for _ in range(w)]
    if not kinds:
        raise SystemExit(f"no fault {sorted(kinds_of or [])} on the paths {sorted(paths)}")
    order: list[tuple[str, str]] = []
    while len(order) < faults:
        round_ = list(kinds)
        rng.shuffle(round_)
        order += round_
    return order[:faults]


class Paths:
    """Each path's case, built the first time a fault needs it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.cases: dict[str, object] = {}

    def tiny(self) -> Path:
        if "tiny" not in self.cases:
            self.cases["tiny"] = harness.tiny_model(self.folder / "tiny-bert")
        return self.cases["tiny"]

    def model(self) -> Path:
        if "model" not in self.cases:
            from serve_harness import build_model_folder

            self.cases["model"] = build_model_folder(self.tiny(), self.folder / "model")
        return self.cases["model"]

    def case(self, path: str):
        if path in ("push", "pull"):
            if "transfer" not in self.cases:   # one project and S3 server for both ways
                # 25 MB: most of a push's or pull's time is then moving objects, not
                # starting dvc, so that more faults cut a transfer in the middle.
                self.cases["transfer"] = harness.transfer_case(self.folder / "transfer",
                                                               files=96, size=256 * 1024)
            return self.cases["transfer"]
        if path not in self.cases:
            if path == "predict":
                self.cases[path] = harness.predict_case(self.model(), self.folder / "predict")
            elif path == "serve":
                (self.folder / "serve").mkdir()
                self.cases[path] = harness.ServeCase(self.model(), self.folder / "serve")
            elif path == "queue":
                (self.folder / "queue").mkdir()
                self.cases[path] = sweeps.queue_case(self.folder / "queue", self.tiny())
            elif path == "kfp":
                # 3 points, 2 at once: faults also land with some points pushed, others
                # running or not started; 2 epochs: a kill in the second resumes
                (self.folder / "kfp").mkdir()
                self.cases[path] = sweeps.kfp_case(self.folder / "kfp", self.tiny(),
                                                    sizes=(8, 16, 32), epochs=2)
            else:
                (self.folder / "repro").mkdir()
                self.cases[path] = harness.repro_case(self.folder / "repro", self.tiny())
        return self.cases[path]

    def trial(self, path: str, fault: str, rng: random.Random) -> harness.Trial:
        if fault == "enospc":
            run = {"predict": fault_enospc.predict_trial, "serve": fault_enospc.serve_trial,
                   "repro": fault_enospc.repro_trial}[path]
            return run(self.case(path), rng)
        if path in ("push", "pull"):
            return harness.transfer_trial(self.case(path), path, fault, rng)
        run = {"predict": harness.predict_trial, "serve": harness.serve_trial,
               "repro": harness.repro_trial, "queue": sweeps.queue_trial,
               "kfp": sweeps.kfp_trial}[path]
        return run(self.case(path), fault, rng)

    def close(self) -> list[str]:
        if "transfer" in self.cases:
            self.cases["transfer"].stop()
        serve = self.cases.get("serve")
        return serve.stop() if serve is not None else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faults", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--paths", default="predict,serve,repro",
                        help="comma-separated: predict, serve, repro, push, pull, queue, kfp")
    parser.add_argument("--kinds", default=None,
                        help="comma-separated faults to deal, e.g. sigterm (default: all "
                             "of each path's)")
    parser.add_argument("--minutes", type=float, default=None,
                        help="stop dealing faults after this long (the table says how many)")
    args = parser.parse_args()
    # SIGTERM (a `kill`, a timeout) ends the run through `finally`: no server left behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(machine(), flush=True)
    order = schedule(args.faults, set(args.paths.split(",")), args.seed,
                     set(args.kinds.split(",")) if args.kinds else None)
    not_run = {}
    if any(fault == "enospc" for _, fault in order) and mount_refused():
        not_run = {(path, "enospc"): mount_refused() for path, fault in order
                   if fault == "enospc"}
        order = [(path, fault) for path, fault in order if fault != "enospc"]
    started = time.monotonic()
    trials: list[harness.Trial] = []
    with tempfile.TemporaryDirectory(prefix="textclf-faults-") as tmp:
        paths = Paths(Path(tmp))
        try:
            for number, (path, fault) in enumerate(order, 1):
                if args.minutes and time.monotonic() - started > args.minutes * 60:
                    print(f"stopped after {args.minutes:g} minutes", flush=True)
                    break
                began = time.monotonic()
                trial = paths.trial(path, fault, random.Random(args.seed * 100_003 + number))
                trials.append(trial)
                print(f"{number:4d} {path:8s} {fault:19s} at {trial.at_s:7.2f} "
                      f"{'landed' if trial.landed else 'missed'} "
                      f"{f'({trial.done}) ' if trial.done else ''}"
                      f"{len(ours(trial))} broken{dvcs(trial)} "
                      f"({time.monotonic() - began:.0f} s)"
                      + "".join(f"\n       - {b}" for b in trial.broken)
                      + (f"\n       (the recovery said: {trial.said})" if trial.said else ""),
                      flush=True)
        finally:
            leftover = paths.close()
            harness.kill_all()
            leftover += [f"a mount left behind: {m}" for m in mounts_under(Path(tmp))]
    print(table(trials, leftover, time.monotonic() - started, args, not_run))


def table(trials: list[harness.Trial], leftover: list[str], seconds: float,
          args: argparse.Namespace, not_run: dict[tuple[str, str], str]) -> str:
    rows = collections.OrderedDict()
    for trial in trials:
        row = rows.setdefault((trial.path, trial.fault), [0, 0, 0, 0, trial.recovery])
        row[0] += trial.landed
        row[1] += not trial.landed
        row[2] += bool(ours(trial))
        row[3] += bool(trial.broken) and not ours(trial)
    lines = [f"\n`python benchmarks/fault_injection.py --faults {args.faults} --seed {args.seed}"
             f"{f' --paths {args.paths}' if args.paths != 'predict,serve,repro' else ''}"
             f"{f' --kinds {args.kinds}' if args.kinds else ''}"
             f"{f' --minutes {args.minutes:g}' if args.minutes else ''}`: "
             f"{sum(t.landed for t in trials)} faults injected "
             f"({sum(not t.landed for t in trials)} more came after the run had ended) in "
             f"{seconds / 60:.0f} min", "",
             "| path | fault | injected | missed | trials with a broken invariant: textclf's "
             "| only DVC's documented defects | recovery |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for (path, fault), (landed, missed, broken, dvcs, recovery) in sorted(rows.items()):
        lines.append(f"| {path} | {fault} | {landed} | {missed} | {broken} | {dvcs} "
                     f"| {recovery} |")
    for (path, fault), why in sorted(not_run.items()):
        lines.append(f"| {path} | {fault} | not run | | | | {why} |")
    filled = [t for t in trials if t.fault == "enospc" and t.path == "repro" and t.landed]
    if filled:
        where = collections.Counter(t.done.split(":")[0] for t in filled)
        dvcs = [t for t in filled if any(harness.dvcs_defect(b) for b in t.broken)]
        lines.append("\nrepro enospc: the full folder was "
                     + ", ".join(f"{w} in {n}" for w, n in sorted(where.items()))
                     + f"; {len(dvcs)} of {where['cache']} full caches met DVC's defects "
                       f"(exit 0 with objects missing from the cache, `.tmp` scratch left: "
                       f"docs/durability.md)")
    moved = [t for t in trials if t.done and t.landed and t.path in ("push", "pull")]
    if moved:
        # some but not all objects moved when the fault came: it cut a transfer in the middle
        middle = sum(0 < int(t.done.split("/")[0]) < int(t.done.split("/")[1].split()[0])
                     for t in moved)
        lines.append(f"\npush/pull: {middle} of {len(moved)} injected faults came in the "
                     f"middle of the transfer (some objects moved, not all)")
        again = [t for t in moved if harness.RUN_AGAIN in t.said]
        lines.append(f"push/pull: {len(again)} of {len(moved)} injected faults needed the "
                     f"documented second run (DVC's partial view after a kill: "
                     f"docs/durability.md)"
                     + "".join(f"\n- {t.path} {t.fault}: {t.said}" for t in again))
    queued = [t for t in trials if t.path == "queue" and t.landed]
    if queued:
        runs = collections.Counter(t.done for t in queued)
        lines.append("\nqueue: runs finished when the fault came: "
                     + ", ".join(f"{done} in {n}" for done, n in sorted(runs.items())))
        tolerated = [t for t in queued if "refs/exps/temp" in t.said]
        lines.append(f"queue: {len(tolerated)} of {len(queued)} injected faults left refs "
                     f"under refs/exps/temp (DVC's, tolerated: docs/durability.md)")
        twice = [t for t in queued if sweeps.REMOVED_TWICE in t.said]
        lines.append(f"queue: {len(twice)} of {len(queued)} injected faults left a run a "
                     f"stopping worker had taken but not started, which needed "
                     f"`dvc queue remove --failed` twice (DVC's: docs/durability.md)")
    swept = [t for t in trials if t.path == "kfp" and t.landed]
    if swept:
        points = collections.Counter(t.done for t in swept)
        lines.append("\nkfp: points pushed when the fault came: "
                     + ", ".join(f"{done} in {n}" for done, n in sorted(points.items())))
        lingered = [t for t in swept if "lingered" in t.said]
        lines.append(f"kfp: {len(lingered)} of {len(swept)} injected faults left processes "
                     f"that took more than 0.5 s to end")
    broken = [(t.path, t.fault, b) for t in trials for b in t.broken]
    broken += [("serve", "(last server)", b) for b in leftover]
    defects = collections.Counter(harness.dvcs_defect(b) for _, _, b in broken)
    lines.append(f"\nbroken invariants: {len(broken)}, of them DVC's documented defects: "
                 f"{len(broken) - defects[None]}"
                 + "".join(f"; {n} x {defect}" for defect, n in defects.items() if defect))
    lines += [f"- {path} {fault}: {what}" for path, fault, what in broken]
    return "\n".join(lines)


def dvcs(trial: harness.Trial) -> str:
    """" + N DVC" for a trial whose broken invariants are partly DVC's documented defects."""
    theirs = len(trial.broken) - len(ours(trial))
    return f" + {theirs} DVC" if theirs else ""


def ours(trial: harness.Trial) -> list[str]:
    """The broken invariants that are not a documented DVC defect: textclf's to fix."""
    return [b for b in trial.broken if not harness.dvcs_defect(b)]


if __name__ == "__main__":
    main()
