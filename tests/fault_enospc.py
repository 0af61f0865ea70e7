"""The `enospc` fault (docs/durability.md): the folder a path writes to is a small file
system (tests/small_disk.py) that fills up at a random point of the run; then room is
made (the tmpfs made large again, as a user who freed space would) and the path's
documented recovery command runs, and the invariants of its other faults are checked,
plus: the run that hit the full disk failed with one clear line naming what it could not
write, and left nothing half-written that a later run would trust.

Each trial takes the path's case from tests/fault_harness.py and returns its `Trial`;
the tmpfs is unmounted on the way out whatever happens."""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

from fault_harness import (DVC, DVC_EXITED_0, Load, PredictCase, ReproCase, ServeCase,
                           Trial, check_log, check_project, damaged_cache_objects,
                           dvcs_defect, env, last_error, log_write_errors, recover_serve,
                           repair, run_job, scratch_left)
from small_disk import PAGE, SmallDisk


def one_line_error(output: str, code: int | None, names: str) -> list[str]:
    """The failed run's end, as a user meets it: a non-zero exit (not a signal), no
    traceback, and an error line that names `names` (the file or folder)."""
    broken = []
    if code is None or code <= 0:
        broken.append(f"the run that met the full disk exited {code}")
    if "Traceback" in output:
        broken.append(f"a traceback instead of one line: {last_error(output)}")
    errors = [line for line in output.splitlines() if re.match(r"(ERROR|error):", line)]
    if not any(names in line for line in errors):
        broken.append(f"no error line names {names}: {errors[:2] or last_error(output)}")
    return broken


# --- textclf predict --input F --output O ----------------------------------------------------

def predict_trial(case: PredictCase, rng: random.Random) -> Trial:
    """O's folder on a small file system with room for less than the whole output (O there
    from an earlier run half the time, taking its own room); then room made and the same
    command again."""
    trial = Trial("predict", "enospc", "make room, then the same `textclf predict` again")
    out, expected = case.output, case.expected
    room = rng.randrange(-(-len(expected) // PAGE)) * PAGE      # below the output's size
    trial.done = f"{room // 1024} of {len(expected) // 1024} KB free"
    existed = rng.random() < 0.5
    with SmallDisk(case.folder) as disk:
        if existed:
            out.write_bytes(expected)
        else:
            out.unlink(missing_ok=True)
        disk.fill(room)
        code, output, orphans = run_job(case.command(), case.folder, env())
        trial.broken += orphans
        trial.landed = code != 0
        if code == 0:
            trial.broken.append(f"predict exited 0 with {room} bytes free for an output of "
                                f"{len(expected)}")
        else:
            trial.broken += one_line_error(output, code, str(out))
            lines = [line for line in output.splitlines() if line.strip()]
            if len(lines) != 1:
                trial.broken.append(f"{len(lines)} lines of output, not one: {lines[:3]}")
        if out.exists() and out.read_bytes() != expected:
            trial.broken.append(f"after the full disk O is there but differs from an "
                                f"uninterrupted run's ({out.stat().st_size} bytes)")
        elif existed and not out.exists():
            trial.broken.append("after the full disk the earlier O is gone")
        if scratch_left(case.folder, recursive=False):
            trial.broken.append(f"the failed write left its scratch file: "
                                f"{scratch_left(case.folder, recursive=False)}")
        disk.make_room()
        code, output, orphans = run_job(case.command(), case.folder, env())
        trial.broken += orphans
        if code != 0:
            trial.broken.append(f"recovery exited {code}: {output.strip()[-300:]}")
        elif out.read_bytes() != expected:
            trial.broken.append("after recovery O differs from an uninterrupted run's")
        if scratch_left(case.folder, recursive=False):
            trial.broken.append(f"scratch left after recovery: "
                                f"{scratch_left(case.folder, recursive=False)}")
    return trial


# --- textclf serve under load ----------------------------------------------------------------

def serve_trial(case: ServeCase, rng: random.Random) -> Trial:
    """The log folder on a small file system with a few KB free (beyond what its files'
    last pages still hold) under 4 clients' load; then room made and serve started again
    on the same folder. The server keeps answering through the full disk: each request
    it could not log is named on stderr with the folder and counted at /metrics."""
    trial = Trial("serve", "enospc", "make room, then `textclf serve` again on the same "
                                     "--log-dir")
    trial.broken += case.stop()
    with SmallDisk(case.log_dir) as disk:
        room = rng.randrange(8) * PAGE
        disk.fill(room)
        trial.done = f"{room // 1024} KB free"
        server, why = case.start()
        if server is None:
            trial.broken.append(f"serve did not start on the small file system: {why}")
            return trial
        case.server = server
        case.counter += 1
        with Load(case.port, f"t{case.counter}", rng.randrange(10**6)) as load:
            started = time.monotonic()
            time.sleep(rng.uniform(0.3, 3.0))
            trial.at_s = time.monotonic() - started
        errors = log_write_errors(case.port)     # the clients are done: the count is final
        trial.landed = bool(errors)
        trial.broken += case.stop()
        stderr = server.text("err")
        trial.broken += check_log(case.log_dir, list(load.sent), "enospc", stderr, errors)
        trial.broken += unclear_log_errors(stderr, case.log_dir)
        disk.make_room()
        trial.broken += recover_serve(case, list(load.sent))
        trial.broken += case.stop()          # out of the folder before it is unmounted
    return trial


def unclear_log_errors(stderr: str, log_dir: Path) -> list[str]:
    """Each failed log write reported in one line naming the folder and the cause."""
    broken = []
    if "Traceback" in stderr:
        broken.append(f"a traceback on serve's stderr: {last_error(stderr)}")
    reports = [line for line in stderr.splitlines() if "could not write request" in line]
    unclear = [line for line in reports
               if str(log_dir) not in line or "No space left on device" not in line]
    if unclear:
        broken.append(f"{len(unclear)} log write errors do not name the folder and the "
                      f"cause: {unclear[0][:200]}")
    return broken


# --- dvc repro of the pipeline ---------------------------------------------------------------

def repro_trial(case: ReproCase, rng: random.Random) -> Trial:
    """The checkpoint folder ($TEXTCLF_CHECKPOINT_DIR) or the DVC cache (starting empty, as
    in a fresh clone) on a small file system with room for less than a whole `dvc repro -f`
    puts there; then room made and `dvc repro`."""
    trial = Trial("repro", "enospc", "make room, then `dvc repro`")
    where = rng.choice(["checkpoints", "cache"])
    # The checkpoint only matters to training: `-s train` runs it alone, as a changed
    # train param would. The cache starts empty, so every stage's outputs go into it.
    command = [DVC, "repro", "-f"] + (["-s", "train"] if where == "checkpoints" else [])
    folder, need = ((case.checkpoints, case.checkpoint_bytes) if where == "checkpoints"
                    else (case.project / ".dvc" / "cache", case.cache_bytes))
    room = rng.randrange(max(need // PAGE, 1)) * PAGE
    trial.done = f"{where}: {room // 1024} of {need // 1024} KB free"
    with SmallDisk(folder, keep=where == "checkpoints") as disk:
        disk.fill(room)
        code, output, orphans = run_job(command, case.project, case.env())
        trial.broken += orphans
        trial.landed = code != 0 or "No space left on device" in output
        if code == 0 and trial.landed:
            said = DVC_EXITED_0 if where == "cache" else "dvc repro exited 0 though"
            trial.broken.append(f"{said} {room} bytes free in the {where} folder, where a "
                                f"whole run puts {need}")
        elif code != 0:
            trial.broken += one_line_error(output, code, str(folder))
            trial.said = last_error(output)
        trial.broken += half_written(case)
        disk.make_room()
        code, output, orphans = run_job([DVC, "repro"], case.project, case.env())
        trial.broken += orphans
        if code != 0:
            trial.broken.append(f"recovery `dvc repro` exited {code}: {last_error(output)}")
        else:
            trial.broken += check_project(case)
        if [b for b in trial.broken if not dvcs_defect(b)]:
            repair(case)
        for scratch in folder.rglob(".*.tmp") if where == "cache" else []:
            scratch.unlink()                # counted above; not the next trial's to count
    return trial



def half_written(case: ReproCase) -> list[str]:
    """What the failed run left that a later one would trust: a checkpoint that does not
    load, a save's scratch, a damaged object or scratch in the DVC cache."""
    import torch

    broken = [f"after the full disk: {b}" for b in damaged_cache_objects(case.project)]
    folder = case.checkpoints
    scratch = scratch_left(folder, recursive=False) if folder.is_dir() else []
    if scratch:
        broken.append(f"after the full disk: a checkpoint save's scratch left: {scratch}")
    for checkpoint in folder.glob("*.pt") if folder.is_dir() else []:
        try:
            torch.load(checkpoint, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any failure to load is the finding
            broken.append(f"after the full disk: checkpoint {checkpoint.name} does not "
                          f"load ({type(err).__name__})")
    return broken
