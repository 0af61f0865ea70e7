"""Ctrl-C or SIGTERM to `textclf kfp run --local` leaves no process behind: a stopped point
stops its step's whole process group (`dvc exp run` and the stage it runs), the command
stops every point, starts no other, names the experiments that did not finish and exits
with 128 + the signal. Every process of a run carries a tag in its environment, so one
orphaned anywhere on the machine is found."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest
import yaml

import fault_sweeps
from harness import copy_project
from remote_project import base_env, call, isolate
from textclf.sweeps.stop import STOP_FILE_VARIABLE, PointStopped, run_in_own_group, \
    stop_group, stopped_by_signals

TAG = "TEXTCLF_STOP_TEST_TAG"


def tagged(tag: str) -> list[psutil.Process]:
    """Live (not zombie) processes whose environment carries TAG=tag."""
    return fault_sweeps.tagged(tag, TAG)


def tagged_commands(tag: str) -> list[list[str]]:
    """The command lines of `tagged(tag)`; a process that ends between the listing and the
    reading is left out (it is no longer there to count)."""
    commands = []
    for proc in tagged(tag):
        try:
            commands.append(proc.cmdline())
        except psutil.Error:
            continue
    return commands


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def describe(processes: list[psutil.Process]) -> list[str]:
    described = []
    for proc in processes:
        try:
            described.append(f"{proc.pid}: {' '.join(proc.cmdline())[:160]}")
        except psutil.Error:
            continue
    return described


def test_a_stopped_step_takes_its_whole_process_group_with_it(tmp_path):
    tag = uuid.uuid4().hex
    env = {**os.environ, TAG: tag}
    env.pop(STOP_FILE_VARIABLE, None)

    def signal_once_both_sleep():
        try:
            wait_for(lambda: [c[:1] for c in tagged_commands(tag)].count(["sleep"]) == 2,
                     20, "the step's two sleeps")
        except AssertionError:
            return              # the test fails below; never signal a process not waiting
        os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    helper = threading.Thread(target=signal_once_both_sleep)
    helper.start()
    started = time.monotonic()
    with pytest.raises(PointStopped, match="SIGTERM"):
        with stopped_by_signals():
            # a background grandchild, as `dvc exp run` has its stage's command
            run_in_own_group(["sh", "-c", "sleep 300 & sleep 301; wait"], tmp_path, env)
    helper.join()
    assert tagged(tag) == [], describe(tagged(tag))
    assert time.monotonic() - started < 20
    assert signal.getsignal(signal.SIGTERM) is before          # handlers restored


def test_stopping_a_group_restores_the_signal_handlers_it_set_aside():
    """stop_group ignores SIGINT and SIGTERM while it waits for the group (a second Ctrl-C
    must not cut the clean-up short), then puts the handlers back: a process that goes on
    after it (a test worker, an interactive session) still stops on Ctrl-C."""
    def handler(signum, frame):
        pass

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        child = subprocess.Popen(["sleep", "30"], start_new_session=True)
        stop_group(child, grace=5)
        assert child.wait(5) == -signal.SIGTERM
        assert signal.getsignal(signal.SIGINT) is handler
        assert signal.getsignal(signal.SIGTERM) is handler
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def test_a_point_of_a_stopped_sweep_runs_nothing(tmp_path, monkeypatch):
    (tmp_path / "stopped").touch()
    monkeypatch.setenv(STOP_FILE_VARIABLE, str(tmp_path / "stopped"))
    with pytest.raises(PointStopped, match="the sweep was stopped"):
        run_in_own_group(["touch", str(tmp_path / "ran")], tmp_path, dict(os.environ))
    assert not (tmp_path / "ran").exists()


# --- the whole command (slow: kfp.local, git and DVC in subprocesses) ------------------------

WAIT_STAGE = """\
import os, pathlib, time, yaml
msg = yaml.safe_load(open("params.yaml"))["msg"]
pathlib.Path(os.environ["STARTED_DIR"], str(msg)).touch()
time.sleep(600)
"""


def waiting_project(root: Path) -> tuple[Path, Path]:
    """A DVC project whose one stage marks that it started, then sleeps 10 minutes; and its
    bare origin."""
    project, origin = root / "waiting", root / "waiting.git"
    project.mkdir()
    (project / "params.yaml").write_text("msg: 0\n")
    (project / "wait.py").write_text(WAIT_STAGE)
    (project / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"wait": {
        "cmd": "python wait.py", "deps": ["wait.py"], "params": ["msg"],
        "outs": ["out.txt"]}}}))
    for cmd in (["git", "init", "-q", "-b", "main"], ["dvc", "init", "-q"],
                ["git", "add", "-A"], ["git", "commit", "-qm", "wait"],
                ["git", "init", "-q", "--bare", "-b", "main", origin],
                ["git", "remote", "add", "origin", origin],
                ["git", "push", "-q", "origin", "main"]):
        call(cmd, project)
    return project, origin


def start_sweep(project: Path, origin: Path, tmp_path: Path, sets: list[str],
                env: dict[str, str]) -> subprocess.Popen:
    """`textclf kfp run --local` of sweep `halt` in its own session (as a shell's job)."""
    args = [arg for setting in sets for arg in ("-S", setting)]
    with open(tmp_path / "out.txt", "w") as out, open(tmp_path / "err.txt", "w") as err:
        return subprocess.Popen(
            ["textclf", "kfp", "run", "--local", "--repo", str(origin),
             "--remote", str(tmp_path / "storage"), "-n", "halt", *args,
             "--parallelism", "2", "--pipeline-root", str(tmp_path / "kfp-root")],
            cwd=project, env={**base_env(), "OMP_NUM_THREADS": "1", **env}, stdout=out,
            stderr=err, start_new_session=True)


def stop_sweep(sweep: subprocess.Popen, signum: int, group: bool) -> int:
    """Send the signal (to the whole group, as Ctrl-C does, or the command alone); its
    exit code."""
    try:
        if group:
            os.killpg(sweep.pid, signum)
        else:
            sweep.send_signal(signum)
        return sweep.wait(timeout=90)
    finally:
        if sweep.poll() is None:
            sweep.kill()


def check_stopped(tmp_path: Path, code: int, signum: int, names: str, tag: str) -> str:
    """The exit code and the message are as promised and no tagged process is left;
    the message line."""
    error = (tmp_path / "err.txt").read_text()
    assert code == 128 + signum, error
    [last] = [line for line in error.splitlines() if line.startswith("error: ")]
    assert last.startswith(f"error: stopped by {signal.Signals(signum).name}: "), last
    assert f"did not finish (not pushed): {names} (task outputs in " in last, last
    # a point kfp.local starts after the stop does nothing and exits on its own
    wait_for(lambda: not tagged(tag), 30, f"no process left: {describe(tagged(tag))}")
    return last


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM to the command", "Ctrl-C (SIGINT to its group)"])
def test_stopping_a_local_sweep_leaves_no_process_and_names_what_did_not_finish(tmp_path, how):
    isolate(tmp_path)
    project, origin = waiting_project(tmp_path)
    started, tag = tmp_path / "started", uuid.uuid4().hex
    started.mkdir()
    sweep = start_sweep(project, origin, tmp_path, ["msg=1,2,3"],
                        {TAG: tag, "STARTED_DIR": str(started)})
    # points 1 and 2 run their stage (kfp.local runs 2 at once); 3 waits for a slot
    wait_for(lambda: len(list(started.iterdir())) == 2 or sweep.poll() is not None, 180,
             "two points' stages")
    assert sweep.poll() is None, (tmp_path / "err.txt").read_text()
    # the interpreters running the stage: a shell that DVC starts it with (dash on some
    # machines keeps one) holds "python wait.py" as a single -c argument and is not counted
    assert len([c for c in tagged_commands(tag) if c[1:2] == ["wait.py"]]) == 2, \
        describe(tagged(tag))
    signum = signal.SIGTERM if how.startswith("SIGTERM") else signal.SIGINT
    code = stop_sweep(sweep, signum, group=signum == signal.SIGINT)
    check_stopped(tmp_path, code, signum, "halt-1, halt-2, halt-3", tag)
    assert sorted(p.name for p in started.iterdir()) == ["1", "2"]
    assert call(["git", "ls-remote", origin, "refs/exps/*"], project).stdout == ""


@pytest.mark.slow
def test_sigterm_stops_points_that_train(tmp_path, tiny_model_dir):
    """The same with `textclf train` running: it saves a checkpoint within the grace period
    and nothing is left (the stand-in stage above only sleeps)."""
    isolate(tmp_path)
    project = copy_project(tmp_path / "project", "tiny model",
                           model={"name": str(tiny_model_dir)}, train={"epochs": 1})
    origin = tmp_path / "origin.git"
    call(["git", "init", "-q", "--bare", "-b", "main", origin], tmp_path)
    call(["git", "push", "-q", origin, "HEAD:main"], project)
    tag = uuid.uuid4().hex
    sweep = start_sweep(project, origin, tmp_path,
                        ["train.epochs=500", "train.batch_size=8,16,32"],
                        {TAG: tag, "TEXTCLF_CHECKPOINT_DIR": str(tmp_path / "checkpoints")})

    def training():
        return sweep.poll() is not None or any(
            "textclf train" in " ".join(c) for c in tagged_commands(tag))

    wait_for(training, 300, "a point's `textclf train`")
    assert sweep.poll() is None, (tmp_path / "err.txt").read_text()
    time.sleep(3)                                           # into the first epoch
    code = stop_sweep(sweep, signal.SIGTERM, group=False)
    check_stopped(tmp_path, code, signal.SIGTERM, "halt-1, halt-2, halt-3", tag)
