"""Fault injection for the two sweep paths (docs/durability.md): `dvc exp run --queue` with
`dvc queue start -j 2`, and `textclf kfp run --local`. The rest of the harness (processes,
`Trial`, the other paths) is tests/fault_harness.py; tests/test_faults.py samples these
with fixed seeds and benchmarks/fault_injection.py runs many."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from fault_harness import (DVC, TEXTCLF, TIMES, Job, Trial, differing, env, last_error,
                           left_behind, md5, output_hashes, run_job, session_members,
                           uncached_outputs)


# --- dvc exp run --queue + dvc queue start -j 2 ----------------------------------------------

EXEC_DIRS = ".dvc/tmp/exps"              # DVC's queue state and its runs' copies of the project
# What a killed run leaves in git, and nothing undoes (docs/durability.md, treeverse/dvc#9260):
# tolerated and counted, not a broken invariant.
TEMP_REF = re.compile(r"refs/exps/temp/(baseline|head|merge)-\w+")
# A run a worker took from the queue but never started (SIGTERM: celery's warm shutdown
# can stop a worker between taking a message and running it) keeps its stash entry, and
# DVC 3.67's `dvc queue remove` then takes it for a queued run: it drops the stash entry and
# leaves the taken message and its failure, so the run stays `Failed` (and in `dvc exp
# show`); the same command again removes it (docs/durability.md). Tolerated and counted.
REMOVED_TWICE = "a second `dvc queue remove --failed` removed"


@dataclass
class QueueCase:
    project: Path
    checkpoints: Path
    sizes: tuple[int, ...]                # train.batch_size of the queued runs, in queue order
    metrics: dict[int, dict[str, bytes]]  # batch size -> an uninterrupted queued run's metrics
    seconds: float = 0.0                  # `dvc queue start -j 2` until every run had finished
    trials: int = 0

    def env(self) -> dict[str, str]:
        # Workers inherit the environment of `dvc queue start`: one thread each (README).
        return env(TEXTCLF_CHECKPOINT_DIR=str(self.checkpoints),
                   TEXTCLF_CHECKPOINT_INTERVAL="0")

    def dvc(self, *args: object) -> tuple[int | None, str, list[str]]:
        return run_job([DVC, *args], self.project, self.env(), timeout=300)


def queue_case(folder: Path, tiny_model: Path, sizes: tuple[int, ...] = (8, 16, 32),
               epochs: int = 2) -> QueueCase:
    """A project copy on the tiny model, its baseline run and committed (queued runs start
    from the last commit), then one run per batch size in `sizes` queued and run once
    uninterrupted with 2 workers: each one's metrics, and how long the queue took."""
    from harness import copy_project

    project = copy_project(folder / "project", "fault injection", model={"name": str(tiny_model)},
                           train={"epochs": epochs})
    case = QueueCase(project, folder / "checkpoints", sizes, {})
    for command in ([DVC, "repro"], ["git", "add", "-A"], ["git", "commit", "-qm", "baseline"]):
        code, output, _ = run_job(command, project, case.env())
        assert code == 0, f"{command} failed:\n{output[-3000:]}"
    names = queue_runs(case, "reference")
    started = time.monotonic()
    job = Job([DVC, "queue", "start", "-j", "2"], project, case.env())
    finished = wait_for_runs(case, names, job, 600)
    case.seconds = time.monotonic() - started
    assert finished == set(names), f"the uninterrupted queue finished only {sorted(finished)}"
    left = stop_workers(case, job)
    assert left == [], f"the uninterrupted queue left: {left}"
    for name, size in names.items():
        case.metrics[size] = run_metrics(project, finished_runs(project)[name])
    code, output, _ = case.dvc("exp", "remove", *names)
    assert code == 0, output
    case.dvc("queue", "remove", "--all")
    return case


def taken_run_case(folder: Path) -> QueueCase:
    """What SIGTERM can leave, built in seconds: a git + DVC project of one `echo` stage,
    one run queued on it (`q1`, `-S a=2`) and its message moved where a worker that takes
    it moves it (kombu's filesystem transport, which dvc-task configures: `broker/in` to
    `broker/processed`), with no worker left to start it. `dvc queue status` says
    `Running`; the run's stash entry is unused."""
    project = folder / "project"
    project.mkdir()
    (project / "params.yaml").write_text("a: 1\n")
    (project / "dvc.yaml").write_text("stages:\n  echo:\n    cmd: echo ${a} > out.txt\n"
                                      "    params: [a]\n    outs: [out.txt]\n")
    case = QueueCase(project, folder / "checkpoints", (), {})
    for command in (["git", "init", "-q"], [DVC, "init", "-q"], ["git", "add", "-A"],
                    ["git", "commit", "-qm", "baseline"],
                    [DVC, "exp", "run", "--queue", "-n", "q1", "-S", "a=2"]):
        code, output, _ = run_job(command, project, case.env())
        assert code == 0, f"{command} failed:\n{output[-2000:]}"
    broker = project / EXEC_DIRS / "celery" / "broker"
    (broker / "processed").mkdir(exist_ok=True)
    for message in (broker / "in").glob("*.msg"):
        message.rename(broker / "processed" / message.name)
    return case


def queue_runs(case: QueueCase, prefix: str) -> dict[str, int]:
    """Queue one run per batch size (`-S train.batch_size=8,16,32`, named PREFIX-1, -2,
    ...): their names and batch sizes. DVC's run cache is emptied first, so that each run
    trains rather than restoring an earlier trial's outputs."""
    shutil.rmtree(case.project / ".dvc" / "cache" / "runs", ignore_errors=True)
    code, output, _ = case.dvc("exp", "run", "--queue", "-n", prefix, "-S",
                               "train.batch_size=" + ",".join(map(str, case.sizes)))
    assert code == 0, f"dvc exp run --queue failed:\n{output[-2000:]}"
    return {f"{prefix}-{i}": size for i, size in enumerate(case.sizes, 1)}


def exp_refs(project: Path) -> dict[str, str]:
    """Every ref under refs/exps: ref -> commit."""
    out = subprocess.run(["git", "for-each-ref", "--format=%(objectname) %(refname)",
                          "refs/exps"], cwd=project, capture_output=True, text=True).stdout
    return {ref: rev for rev, ref in (line.split() for line in out.splitlines())}


def finished_runs(project: Path) -> dict[str, str]:
    """Experiments with a ref (collected: finished), name -> commit; cheaper than asking
    dvc, so that it can be polled."""
    return {ref.rsplit("/", 1)[1]: rev for ref, rev in exp_refs(project).items()
            if not ref.startswith(("refs/exps/celery/", "refs/exps/exec/", "refs/exps/temp/"))}


def wait_for_runs(case: QueueCase, names: dict[str, int], job: Job,
                  timeout: float) -> set[str]:
    """Until every named run has finished, or no worker is left to finish one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        finished = set(finished_runs(case.project)) & set(names)
        if finished == set(names) or not session_members(job.sid):
            return finished
        time.sleep(0.2)
    return set(finished_runs(case.project)) & set(names)


def signal_workers(job: Job, sig: int) -> bool:
    """`sig` to every process of the job's session: `dvc queue start` gives each worker a
    process group of its own (dvc-task's `setpgid`), so one `killpg` reaches only one.
    False if none was left."""
    members = session_members(job.sid)
    for group in {os.getpgid(p.pid) for p in members if p.is_running()}:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, sig)
    return bool(members)


def stop_workers(case: QueueCase, job: Job) -> list[str]:
    """`dvc queue stop` (idle workers would linger 10 to 20 s), then orphans."""
    case.dvc("queue", "stop")
    return job.leftovers(grace_s=30.0)


def run_metrics(project: Path, rev: str) -> dict[str, bytes]:
    """The metrics files (in git, `cache: false`) of an experiment's commit."""
    out = subprocess.run(["git", "ls-tree", "-r", "--name-only", rev, "metrics"], cwd=project,
                         capture_output=True, text=True).stdout
    return {path: subprocess.run(["git", "show", f"{rev}:{path}"], cwd=project,
                                 capture_output=True).stdout
            for path in out.split() if Path(path).name not in TIMES}


def queue_entries(case: QueueCase) -> list[tuple[str, str]]:
    """`dvc queue status` as (name, Queued | Running | Success | Failed), one per line."""
    _, output, _ = case.dvc("queue", "status")
    return re.findall(r"^[0-9a-f]{7}\s+(\S+)\s+.*?(\w+)\s*$", output, re.M)


def listed_runs(case: QueueCase) -> list[tuple[str, str, object]]:
    """`dvc exp show --json`: (name, commit, train.batch_size) of every experiment."""
    code, output, _ = case.dvc("exp", "show", "--json")
    assert code == 0, output
    rows = []
    for baseline in json.loads(output[output.index("["):]):
        for group in baseline.get("experiments") or []:
            for exp in group["revs"]:
                params = ((exp.get("data") or {}).get("params") or {}).get("params.yaml", {})
                rows.append((exp["name"], exp["rev"],
                             ((params.get("data") or {}).get("train") or {}).get("batch_size")))
    return rows


def clear_failed(case: QueueCase, entries: list[tuple[str, str]],
                 notes: list[str]) -> list[str]:
    """The recovery's first steps: runs left `Running` with no worker are marked failed
    (`dvc queue kill`), then failed ones removed (`dvc queue remove --failed`, once more
    if `dvc queue status` still lists one: REMOVED_TWICE, said in `notes`). `entries`:
    `dvc queue status` before. Broken invariants on the way."""
    broken = []
    stuck = [name for name, state in entries if state == "Running"]
    if stuck:
        code, output, orphans = case.dvc("queue", "kill", *stuck)
        broken += orphans
        if code != 0:
            broken.append(f"recovery `dvc queue kill` exited {code}: {last_error(output)}")
    for attempt in range(2):
        code, output, orphans = case.dvc("queue", "remove", "--failed")
        broken += orphans
        if code != 0:
            broken.append(f"recovery `dvc queue remove --failed` exited {code}: "
                          f"{last_error(output)}")
        failed = [name for name, state in queue_entries(case) if state == "Failed"]
        if not failed:
            break
        if attempt == 0:
            notes.append(f"{REMOVED_TWICE} {', '.join(failed)}")
    return broken


def recover_queue(case: QueueCase, names: dict[str, int], entries: list[tuple[str, str]],
                  notes: list[str]) -> list[str]:
    """The documented recovery (docs/durability.md): runs a killed worker left `Running`
    are marked failed, failed ones removed (`clear_failed`), the killed runs' copies of the
    project deleted, every run that did not finish queued again with its params, and the
    workers started again; broken invariants on the way. `entries`: `dvc queue status`
    after the fault; what DVC needed beyond the plain steps goes to `notes`."""
    broken = clear_failed(case, entries, notes)
    for copy in (case.project / EXEC_DIRS).glob("tmp*"):
        shutil.rmtree(copy)
    queued = {name for name, state in queue_entries(case) if state == "Queued"}
    for name in sorted(set(names) - set(finished_runs(case.project)) - queued):
        code, output, orphans = case.dvc("exp", "run", "--queue", "-n", name, "-S",
                                         f"train.batch_size={names[name]}")
        broken += orphans
        if code != 0:
            broken.append(f"recovery: queueing {name} again exited {code}: "
                          f"{last_error(output)}")
    job = Job([DVC, "queue", "start", "-j", "2"], case.project, case.env())
    finished = wait_for_runs(case, names, job, 600)
    if finished != set(names):
        broken.append(f"after recovery, runs not finished: {sorted(set(names) - finished)}")
    return broken + stop_workers(case, job)


def check_queue(case: QueueCase, names: dict[str, int]) -> list[str]:
    """After recovery: each run once in `dvc exp show` with its params and an uninterrupted
    run's metrics; nothing left Running, Queued or Failed; the workspace clean (`git
    status`, `dvc status`); no copy of the project, scratch or checkpoint left."""
    broken = []
    listed = [row for row in listed_runs(case) if row[0] in names]
    for name, size in names.items():
        rows = [row for row in listed if row[0] == name]
        if len(rows) != 1:
            broken.append(f"{name} is listed {len(rows)} times by dvc exp show")
            continue
        if rows[0][2] != size:
            broken.append(f"{name} ran with train.batch_size {rows[0][2]}, queued with {size}")
            continue
        changed = differing(case.metrics[size], run_metrics(case.project, rows[0][1]))
        if changed:
            broken.append(f"{name}: metrics differ from an uninterrupted run's: {changed[:4]}")
    left = [f"{name} {state}" for name, state in queue_entries(case) if state != "Success"]
    if left:
        broken.append(f"dvc queue status after recovery: {left}")
    code, output, _ = run_job(["git", "status", "--porcelain"], case.project, case.env())
    if output.strip():
        broken.append(f"git status is not clean: {output.split()[:6]}")
    code, output, _ = case.dvc("status", "--json")
    if code != 0 or json.loads(output[output.find("{"):] or "{}") != {}:
        broken.append(f"dvc status is not clean: {output.strip()[:300]}")
    copies = sorted(p.name for p in (case.project / EXEC_DIRS).glob("tmp*"))
    if copies:
        broken.append(f"copies of the project left in {EXEC_DIRS}: {copies}")
    return broken + left_behind(case.project, case.checkpoints)


def queue_trial(case: QueueCase, fault: str, rng: random.Random) -> Trial:
    """Three runs queued and 2 workers started; SIGKILL or SIGTERM of every process of the
    workers at a random moment of an uninterrupted queue's length; then the documented
    recovery and the invariants. The trial's runs are removed afterwards (`dvc exp remove`,
    `dvc queue remove --all`), so that each trial starts from the baseline alone."""
    case.trials += 1
    trial = Trial("queue", fault, "`dvc queue kill` the Running, `dvc queue remove --failed` "
                                  "(again while one is Failed), delete .dvc/tmp/exps/tmp*, "
                                  "queue the unfinished again, `dvc queue start -j 2`")
    names = queue_runs(case, f"t{case.trials}")
    temp_refs = {ref for ref in exp_refs(case.project) if TEMP_REF.fullmatch(ref)}
    job = Job([DVC, "queue", "start", "-j", "2"], case.project, case.env())
    time.sleep(rng.uniform(0, case.seconds))
    trial.at_s = time.monotonic() - job.started
    trial.landed = signal_workers(job, signal.SIGTERM if fault == "sigterm" else signal.SIGKILL)
    deadline = time.monotonic() + 60
    while session_members(job.sid) and time.monotonic() < deadline:
        time.sleep(0.1)
    trial.broken += job.leftovers(grace_s=0)
    finished = set(finished_runs(case.project)) & set(names)
    trial.done = f"{len(finished)}/{len(names)} runs"
    trial.landed = trial.landed and finished != set(names)
    entries = queue_entries(case)
    notes: list[str] = []
    trial.broken += recover_queue(case, names, entries, notes)
    trial.broken += check_queue(case, names)
    left = [ref for ref in exp_refs(case.project)
            if TEMP_REF.fullmatch(ref) and ref not in temp_refs]
    if left:
        notes.append(f"DVC left {len(left)} refs under refs/exps/temp (tolerated: dvc#9260)")
    if trial.broken:
        notes.insert(0, f"dvc queue status after the fault: {entries}")
    trial.said = "; ".join(notes)
    case.dvc("exp", "remove", *finished_runs(case.project))
    case.dvc("queue", "remove", "--all")
    return trial


# --- textclf kfp run --local (a grid of `dvc exp run`s through kfp.local) ------------------

TAG = "TEXTCLF_FAULT_TAG"    # in the environment of every process of a sweep: orphans found
                             # anywhere (a point's steps run in sessions of their own)


@dataclass
class KfpCase:
    project: Path                         # the user's clone: the sweep runs and pushes here
    folder: Path
    sizes: tuple[int, ...]                # train.batch_size of the grid's points, in order
    metrics: dict[int, dict[str, bytes]]  # batch size -> an uninterrupted sweep's metrics
    seconds: float = 0.0                  # an uninterrupted `textclf kfp run --local`
    trials: int = 0
    tag: str = ""

    @property
    def scratch(self) -> Path:
        return self.folder / "tmp"        # the sweep's TMPDIR: empty once it has ended

    @property
    def checkpoints(self) -> Path:
        return self.folder / "checkpoints"

    def env(self) -> dict[str, str]:
        return env(TEXTCLF_CHECKPOINT_DIR=str(self.checkpoints), TMPDIR=str(self.scratch),
                   TEXTCLF_CHECKPOINT_INTERVAL="0", **{TAG: self.tag})

    def command(self, name: str) -> list:
        return [TEXTCLF, "kfp", "run", "--local", "-n", name, "--parallelism", "2",
                "-S", "train.batch_size=" + ",".join(map(str, self.sizes)),
                "--pipeline-root", self.folder / "roots" / name]

    def names(self, name: str) -> dict[str, int]:
        return {f"{name}-{i}": size for i, size in enumerate(self.sizes, 1)}


def kfp_case(folder: Path, tiny_model: Path, sizes: tuple[int, ...] = (8, 16),
             epochs: int = 1) -> KfpCase:
    """A project copy on the tiny model with a folder DVC remote holding prepare's outputs
    (as after a teammate's `dvc repro prepare && dvc push`), committed; then the grid run
    once uninterrupted (`-n ref`): each point's metrics, and how long the sweep took."""
    import uuid

    from harness import copy_project

    project = copy_project(folder / "project", "fault injection", model={"name": str(tiny_model)},
                           train={"epochs": epochs})
    case = KfpCase(project, folder, sizes, {}, tag=uuid.uuid4().hex)
    case.scratch.mkdir()
    for command in ([DVC, "remote", "modify", "--local", "local", "url", folder / "storage"],
                    [DVC, "repro", "prepare"], [DVC, "push"], ["git", "add", "-A"],
                    ["git", "commit", "-q", "--allow-empty", "-m", "prepared"]):
        code, output, _ = run_job(command, project, case.env())
        assert code == 0, f"{command} failed:\n{output[-3000:]}"
    started = time.monotonic()
    code, output, orphans = run_job(case.command("ref"), project, case.env(), timeout=900)
    case.seconds = time.monotonic() - started
    assert code == 0 and not orphans, f"uninterrupted sweep failed:\n{output[-3000:]}"
    pushed = sweep_refs(case, "ref")
    for point, size in case.names("ref").items():
        case.metrics[size] = run_metrics(project, pushed[point][0])
        assert missing_on_remote(case, pushed[point][0]) == [], point
    assert not os.listdir(case.scratch), os.listdir(case.scratch)
    return case


def sweep_refs(case: KfpCase, name: str) -> dict[str, list[str]]:
    """The sweep's experiments in the project: point name -> the commits of its refs."""
    found: dict[str, list[str]] = {}
    for ref, rev in exp_refs(case.project).items():
        point = ref.rsplit("/", 1)[1]
        if point in case.names(name) and not ref.startswith("refs/exps/temp/"):
            found.setdefault(point, []).append(rev)
    return found


def tagged(tag: str, variable: str = TAG) -> list[psutil.Process]:
    """Live (not zombie) processes whose environment carries `variable`=tag."""
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(variable) == tag and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
    return found


def process_names(processes: list[psutil.Process]) -> list[str]:
    """'dvc exp run', 'textclf train', ...: each process's program and first argument."""
    names = []
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            words = [Path(w).name for w in proc.cmdline()[:4] if not w.startswith("-")] \
                or [proc.name()]    # exiting, or between fork and exec: no command line
            if words[0].startswith("python") and len(words) > 1:
                words = words[1:]
            names.append(" ".join(words[:3])[:60])
    return sorted(set(names))


def sweep_orphans(case: KfpCase, grace_s: float = 10.0) -> list[str]:
    """Processes of the sweep left `grace_s` after it ended, wherever they are (killed here
    so that they cannot disturb the next run)."""
    deadline = time.monotonic() + grace_s
    while tagged(case.tag) and time.monotonic() < deadline:
        time.sleep(0.2)
    found = []
    for proc in tagged(case.tag):
        with contextlib.suppress(psutil.Error):
            found.append(f"orphan process {proc.pid}: {' '.join(proc.cmdline())[:120]}")
            proc.kill()
    return found


def workspace_state(case: KfpCase) -> dict[str, str]:
    """What the sweep must not touch: params.yaml, dvc.lock and the outputs, by md5, and
    `git status`."""
    state = output_hashes(case.project)
    for name in ("params.yaml", "dvc.lock", "dvc.yaml"):
        state[name] = md5(case.project / name)
    _, status, _ = run_job(["git", "status", "--porcelain"], case.project, case.env())
    state["git status"] = status.strip()
    return state


# What every command says when SIGTERM comes before its own handler (textclf.errors).
EARLY_STOP = "stopped by SIGTERM: outputs are written whole or not at all"


def stopped_names(output: str) -> list[str] | None:
    """The points the SIGTERM message says did not finish; None without such a message."""
    found = re.search(r"^error: stopped by SIGTERM: .*did not finish \(not pushed\): "
                      r"(.*?)(?:; finished: .*)? \(task outputs in ", output, re.M)
    if found is None:
        return None
    return [] if found[1] == "none" else found[1].split(", ")


def kfp_trial(case: KfpCase, fault: str, rng: random.Random) -> Trial:
    """A 2-point grid through `textclf kfp run --local`; SIGKILL or SIGTERM of its process
    group at a random moment of an uninterrupted sweep's length; then the same command
    again and the invariants."""
    case.trials += 1
    name = f"t{case.trials}"
    trial = Trial("kfp", fault, "the same `textclf kfp run --local` again")
    before = workspace_state(case)
    job = Job(case.command(name), case.project, case.env())
    time.sleep(rng.uniform(0, case.seconds))
    trial.at_s = time.monotonic() - job.started
    trial.landed = job.signal(signal.SIGTERM if fault == "sigterm" else signal.SIGKILL)
    code = job.wait(120)
    if code is None:
        trial.broken.append("the sweep did not end within 120 s of the fault")
        job.signal(signal.SIGKILL)
        job.wait(30)
    trial.broken += job.leftovers(grace_s=2.0)
    ended, lingering = time.monotonic(), process_names(tagged(case.tag))
    trial.broken += sweep_orphans(case)
    if time.monotonic() - ended > 0.5:
        trial.said = (f"processes of the sweep lingered {time.monotonic() - ended:.1f} s "
                      f"after it ended ({', '.join(lingering)})")
    pushed = sweep_refs(case, name)
    trial.done = f"{len(pushed)}/{len(case.sizes)} points"
    trial.landed = trial.landed and set(pushed) != set(case.names(name))
    root = case.folder / "roots" / name
    early = code == -signal.SIGTERM or (code == 128 + signal.SIGTERM
                                        and EARLY_STOP in job.text("err"))
    if fault == "sigterm" and early and not (root.is_dir() and os.listdir(root)):
        # Before the command set its handler up (Python starting, kfp imported), SIGTERM
        # ends it as any program (or as textclf.errors does for every command); no task
        # had started, so there is nothing to stop or name.
        trial.said = "SIGTERM came before the command's handler: it ended by the signal"
    elif fault == "sigterm" and trial.landed:
        said = stopped_names(job.text("err"))
        unfinished = sorted(set(case.names(name)) - set(sweep_refs(case, name)))
        if code != 128 + signal.SIGTERM or said is None:
            trial.broken.append(f"SIGTERM: exit {code}, {last_error(job.text())}")
        elif sorted(said) != unfinished:
            trial.broken.append(f"SIGTERM named {said} unfinished; not pushed: {unfinished}")
    code, output, orphans = run_job(case.command(name), case.project, case.env(), timeout=900)
    trial.broken += orphans + sweep_orphans(case)
    if code != 0:
        trial.broken.append(f"recovery exited {code}: {last_error(output)}")
    elif "Sweep leaderboard: " + f"{len(case.sizes)} finished, 0 failed" not in output:
        trial.broken.append(f"recovery's leaderboard: {last_error(output)} "
                            f"{re.findall(r'Sweep leaderboard: .*', output)}")
    trial.broken += check_sweep(case, name, before)
    if trial.broken:
        trial.said += " / ".join(line for line in output.splitlines()[-4:] if line.strip())
    return trial


def missing_on_remote(case: KfpCase, rev: str) -> list[str]:
    """The cached outputs of an experiment's dvc.lock (a folder's files too) that are not
    in the sweep's DVC remote."""
    import yaml

    lock = yaml.safe_load(subprocess.run(["git", "show", f"{rev}:dvc.lock"], cwd=case.project,
                                         capture_output=True, text=True).stdout)
    store, missing = case.folder / "storage" / "files" / "md5", []
    for entry in lock["stages"].values():
        for out in entry.get("outs", []):
            if out["path"] in uncached_outputs(case.project):
                continue
            listing = store / out["md5"][:2] / out["md5"][2:]
            hashes = [out["md5"]] if listing.is_file() else []
            if hashes and out["md5"].endswith(".dir"):
                hashes += [e["md5"] for e in json.loads(listing.read_text())]
            if not hashes or not all((store / h[:2] / h[2:]).is_file() for h in hashes):
                missing.append(out["path"])
    return missing


def check_sweep(case: KfpCase, name: str, before: dict[str, str]) -> list[str]:
    """Each point an experiment once, with an uninterrupted sweep's metrics; the workspace
    as before; the sweep's TMPDIR empty; no checkpoint left."""
    broken = []
    pushed = sweep_refs(case, name)
    for point, size in case.names(name).items():
        revs = pushed.get(point, [])
        if len(revs) != 1:
            broken.append(f"{point} is {len(revs)} experiments")
            continue
        changed = differing(case.metrics[size], run_metrics(case.project, revs[0]))
        if changed:
            broken.append(f"{point}: metrics differ from an uninterrupted run's: {changed[:4]}")
        missing = missing_on_remote(case, revs[0])
        if missing:
            broken.append(f"{point}: outputs not in the DVC remote: {missing}")
    after = workspace_state(case)
    changed = differing(before, after)
    if changed:
        broken.append(f"the workspace changed: {changed[:4]} {after['git status'][:200]}")
    left = sorted(os.listdir(case.scratch))
    if left:
        broken.append(f"left in the sweep's TMPDIR: {left[:4]}")
    return broken + left_behind(case.project, case.checkpoints)
