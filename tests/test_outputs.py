"""Outputs are written whole or not at all, with the user's file modes, and a failed stage
says how to get its previous outputs back."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import REPO
from textclf.errors import UserError, exits_on_user_error
from textclf.outputs import (atomic_dir, atomic_file, check_outputs, scratch_prefix,
                             write_json)


@pytest.fixture
def umask():
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


@pytest.mark.parametrize("mask, folder_mode, file_mode", [(0o022, 0o755, 0o644),
                                                         (0o077, 0o700, 0o600),
                                                         (0o002, 0o775, 0o664)])
def test_outputs_follow_the_umask(tmp_path, umask, mask, folder_mode, file_mode):
    umask(mask)
    with atomic_dir(tmp_path / "model") as scratch:
        (scratch / "weights").write_text("w")
    write_json(tmp_path / "metrics.json", {"accuracy": 1})
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == folder_mode
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == file_mode


def test_a_failure_leaves_the_previous_output_and_no_scratch(tmp_path):
    write_json(tmp_path / "metrics.json", {"accuracy": 1})
    with pytest.raises(RuntimeError):
        with atomic_file(tmp_path / "metrics.json") as scratch:
            scratch.write_text("half")
            raise RuntimeError("killed")
    assert (tmp_path / "metrics.json").read_text().strip().endswith("}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_scratch_left_by_a_killed_process_is_removed_by_the_next_run(tmp_path):
    target = tmp_path / "classifier"
    stale_dir = tmp_path / f"{scratch_prefix(target)}abc123"
    (stale_dir / "sub").mkdir(parents=True)
    stale_file = tmp_path / f"{scratch_prefix(target)}xyz"
    stale_file.write_text("x")
    other = tmp_path / ".another.tmp-keep"   # another target's scratch is left alone
    other.write_text("x")
    with atomic_dir(target) as scratch:
        (scratch / "ok").write_text("ok")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".another.tmp-keep", "classifier"]


def test_scratch_names_are_ignored_by_git():
    for path in ("models/.classifier.tmp-k2j4/model.safetensors",
                 "metrics/.train.tmp-abc/metrics.json", "metrics/.prepare.json.tmp-1x"):
        assert subprocess.run(["git", "check-ignore", "-q", "--no-index", path],
                              cwd=REPO).returncode == 0, path


def test_a_failed_stage_prints_how_to_restore_its_outputs(monkeypatch, capsys):
    @exits_on_user_error
    def stage():
        raise UserError("data/reviews.csv, row 3: empty text")

    monkeypatch.setenv("DVC_STAGE", "prepare")
    with pytest.raises(SystemExit) as exit_info:
        stage()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data/reviews.csv, row 3: empty text\n")
    assert "`dvc checkout prepare` restores" in err
    monkeypatch.delenv("DVC_STAGE")
    with pytest.raises(SystemExit):
        stage()
    assert "hint" not in capsys.readouterr().err, "outside DVC there is nothing to restore"


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stopped_command_removes_the_output_it_was_writing_and_says_so(tmp_path, capsys,
                                                                         signum, code,
                                                                         default_ctrl_c):
    target = tmp_path / "out.csv"
    target.write_text("the previous output\n")

    @exits_on_user_error
    def command():
        with atomic_file(target) as scratch:
            scratch.write_text("half of it")
            os.kill(os.getpid(), signum)        # SIGINT raises KeyboardInterrupt as it is
            raise AssertionError("the signal did not stop the command")

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exit_info:
        command()
    assert exit_info.value.code == code
    err = capsys.readouterr().err
    assert err.startswith(f"stopped by {signal.Signals(signum).name}: outputs are written "
                          f"whole or not at all") and err.count("\n") == 1, err
    assert target.read_text() == "the previous output\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]        # no scratch left
    assert signal.getsignal(signal.SIGTERM) is before                  # handler restored


@pytest.mark.parametrize("case, message", [
    ("output is an input", "--out data.csv: is the --data file"),
    ("output is an input by a link", "is the --data file"),
    ("two outputs share a path", "--metrics a.csv: is also the path of --out"),
    ("output is a folder", "--out sub: is a folder"),
    ("a file where a folder must be made", "data.csv is a file, not a folder"),
])
def test_outputs_that_would_destroy_an_input_or_fail_late_are_refused(tmp_path, monkeypatch,
                                                                       case, message):
    monkeypatch.chdir(tmp_path)
    Path("data.csv").write_text("text,label\n")
    Path("sub").mkdir()
    Path("link.csv").symlink_to("data.csv")
    outputs = {"output is an input": [("--out", "data.csv")],
               "output is an input by a link": [("--out", "link.csv")],
               "two outputs share a path": [("--out", "a.csv"), ("--metrics", "./a.csv")],
               "output is a folder": [("--out", "sub")],
               "a file where a folder must be made": [("--out", "data.csv/x/a.csv")]}[case]
    with pytest.raises(UserError, match=re.escape(message)):
        check_outputs(outputs, [("--data", "data.csv")])
    check_outputs([("--out", "new/a.csv"), ("--metrics", "new/a.json")],
                  [("--data", "data.csv")])            # new folders are fine
    assert not Path("new").exists()                     # and nothing was made yet
    assert sorted(os.listdir(".")) == ["data.csv", "link.csv", "sub"]   # no probe left


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_a_folder_no_file_can_be_made_in_is_refused_before_the_work_even_for_root():
    """os.access says yes to root everywhere; /proc refuses every new file. The command
    must say so before its work, not in a traceback after writing its other outputs."""
    with pytest.raises(UserError, match=re.escape("--metrics /proc/live.json: cannot write "
                                                  "in /proc")):
        check_outputs([("--out", "live.md"), ("--metrics", "/proc/live.json")])
    with pytest.raises(UserError, match=re.escape("/proc/live.json: cannot write there")):
        with atomic_file("/proc/live.json"):
            pass

