"""Training on 2 CPU processes through torch.distributed (torchrun, gloo)."""

from __future__ import annotations

import contextlib
import json
import shutil
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from conftest import LABELS, REPO, toy_reviews
from textclf.data.dataset import write_labels, write_split
from textclf.model.folder import TrainingInfo
from textclf.training.distributed import COLLECTIVE_TIMEOUT, Workers

pytestmark = pytest.mark.slow


def test_shards_split_each_batch_and_weights_restore_the_batch_mean():
    import torch

    batch = {"labels": torch.arange(5), "input_ids": torch.arange(10).reshape(5, 2)}
    shards = [Workers(rank, 2).shard(batch) for rank in range(2)]
    assert [s["labels"].tolist() for s, _ in shards] == [[0, 2, 4], [1, 3]]
    # mean over ranks of (weight x local mean) = global mean
    assert sum(w for _, w in shards) / 2 == pytest.approx(1.0)
    assert [w for _, w in shards] == [pytest.approx(6 / 5), pytest.approx(4 / 5)]
    small, weight = Workers(1, 2).shard({"labels": torch.arange(1)})
    assert weight == 0.0 and len(small["labels"]) == 1


def workspace(tmp_path: Path, tiny_model_dir: Path, processes: int) -> tuple[list[str], Path]:
    data = toy_reviews(per_class=24)
    write_split(data, tmp_path / "train.parquet")
    write_split(data.iloc[::4], tmp_path / "val.parquet")
    write_labels(LABELS, tmp_path / "labels.json")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"]["name"] = str(tiny_model_dir)
    params["train"].update(epochs=3, batch_size=8, lr=3e-3, processes=processes,
                           precision="fp32")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / f"run{processes}"
    return ["textclf", "train", "--params", str(tmp_path / "params.yaml"),
            "--train", str(tmp_path / "train.parquet"), "--val", str(tmp_path / "val.parquet"),
            "--labels", str(tmp_path / "labels.json"), "--model-dir", str(out / "model"),
            "--live-dir", str(out / "live"), "--checkpoint-dir", str(out / "ckpt")], out


def without_dropout(model_dir: Path, dest: Path) -> Path:
    """A copy of the model with dropout off: dropout masks are drawn per process, so with
    dropout on, 1 and 2 processes would not make the same updates."""
    shutil.copytree(model_dir, dest)
    config = json.loads((dest / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (dest / "config.json").write_text(json.dumps(config))
    return dest


def test_two_processes_train_one_model_close_to_one_process(tmp_path, tiny_model_dir):
    results = {}
    model_dir = without_dropout(tiny_model_dir, tmp_path / "no-dropout")
    for processes in (1, 2):
        command, out = workspace(tmp_path, model_dir, processes)
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        results[processes] = json.loads((out / "live" / "metrics.json").read_text())
        assert (out / "model" / "model.safetensors").is_file()
        # rank 0 fits the temperature on the validation split and records it
        assert TrainingInfo.load(out / "model").calibrator() is not None
        assert "temperature" in results[processes]["calibration"]
        assert not list((out / "ckpt").glob("*.pt"))
    assert "starting 2 processes" in done.stdout
    assert done.stdout.count("train: best epoch") == 1, "only rank 0 reports and writes"
    # Same global batches, same updates: only float summation order differs (gradients are
    # summed across ranks by all-reduce), so validation scores agree to within one or two
    # of the 30 validation examples.
    for key in ("val_accuracy", "val_f1_macro"):
        assert abs(results[1]["best"][key] - results[2]["best"][key]) <= 0.07, key
    assert abs(results[1]["train"]["loss"] - results[2]["train"]["loss"]) < 0.05


# A batch of training done on rank 0 (tqdm, stderr): "epoch 1/200:   4%|▍   | 1/25 [".
# Every step all-reduces across the ranks, so both are then inside the training loop.
TRAINING = re.compile(r"epoch \d+/\d+:[^\r\n]*?\| *[1-9][0-9]*/[0-9]+ \[")
# Once a rank dies, torchrun stops the others within seconds (SIGTERM, then SIGKILL after
# 30 s); without it the survivor would wait in a collective for COLLECTIVE_TIMEOUT (10 min).
# A bound well under that tells a hang from a slow machine; it is not a speed claim.
HANG_S = 300
assert HANG_S < COLLECTIVE_TIMEOUT.total_seconds()


class TwoRanks:
    """`textclf train` on 2 processes for 200 epochs (long enough to interrupt), started in
    a session of its own, its output read as it comes."""

    def __init__(self, tmp_path: Path, tiny_model_dir: Path):
        command, self.out = workspace(tmp_path, tiny_model_dir, 2)
        params = yaml.safe_load((tmp_path / "params.yaml").read_text())
        params["train"]["epochs"] = 200
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env={**os.environ, "OMP_NUM_THREADS": "1"},
                                     start_new_session=True)
        self.chunks: list[bytes] = []
        self.reader = threading.Thread(target=lambda: self.chunks.extend(
            iter(lambda: self.proc.stdout.read1(65536), b"")), daemon=True)
        self.reader.start()

    def output(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")

    def ranks(self) -> list[str]:
        # torchrun starts each worker in a session of its own: find them by command line.
        return subprocess.run(["pgrep", "-f", f"[-]u -m textclf[.]train .*{self.out}"],
                              capture_output=True, text=True).stdout.split()

    def training(self) -> list[str]:
        """The two ranks' pids, once both are inside the training loop."""
        deadline = time.monotonic() + 600    # fails a stuck start with a message
        while not (TRAINING.search(self.output()) and len(started := self.ranks()) == 2):
            assert self.proc.poll() is None, \
                f"training ended before it was interrupted:\n{self.output()}"
            assert time.monotonic() < deadline, \
                f"2 ranks not training after 600 s:\n{self.output()}"
            time.sleep(0.2)
        return started

    def end(self) -> None:
        """Leave nothing running after a failed test; the output read to its end."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                for pid in self.ranks():
                    os.kill(int(pid), signal.SIGKILL)
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.reader.join(timeout=60)


def test_a_crashed_process_stops_the_others(tmp_path, tiny_model_dir):
    run = TwoRanks(tmp_path, tiny_model_dir)
    try:
        started = run.training()
        os.kill(int(started[-1]), signal.SIGKILL)
        try:
            run.proc.wait(timeout=HANG_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the surviving rank hangs: training still runs {HANG_S} s after "
                        f"rank {started[-1]} was killed:\n{run.output()[-3000:]}")
    finally:
        run.end()
    assert run.proc.returncode != 0
    assert "a training process failed" in run.output()
    assert not (run.out / "model").exists(), "nothing half-written"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_stop_of_the_launcher_stops_every_process_with_a_checkpoint(tmp_path, tiny_model_dir,
                                                                      sig):
    """What Kubernetes, a scheduler or `dvc queue kill` send reaches `textclf train` only:
    it is passed on through torchrun, so every rank stops, rank 0 saves a checkpoint, and
    the command exits 143 as one process does (the ranks used to train on, unsupervised).
    Killed outright (out of memory), the launcher takes torchrun with it: the same stop."""
    run = TwoRanks(tmp_path, tiny_model_dir)
    try:
        run.training()
        run.proc.send_signal(sig)                    # the launcher alone, not its group
        code = run.proc.wait(timeout=HANG_S)
        assert code == (128 + sig if sig != signal.SIGKILL else -sig), run.output()[-3000:]
        deadline = time.monotonic() + HANG_S         # after a kill, the ranks end later
        while run.ranks() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        run.end()
    output = run.output()
    assert run.ranks() == [], "a training process outlived the command"
    assert output.count("train: stopped by SIGTERM") == 1, output[-3000:]
    if sig == signal.SIGTERM:     # killed outright, torchrun's own logging may complain
        assert "Traceback" not in output, output[-3000:]
    assert len(list((run.out / "ckpt").glob("*.pt"))) == 1
    assert not (run.out / "model").exists()


def test_a_bad_split_file_is_named_once_before_any_process_starts(tmp_path, tiny_model_dir,
                                                                 capsys):
    from textclf import train

    command, _ = workspace(tmp_path, tiny_model_dir, 2)
    argv = command[2:]
    argv[argv.index("--train") + 1] = str(tmp_path / "nope.parquet")
    with pytest.raises(SystemExit) as stop:
        train.main(argv)
    assert stop.value.code == 2
    captured = capsys.readouterr()
    assert captured.err == f"error: {tmp_path / 'nope.parquet'}: file not found\n"
    assert "starting 2 processes" not in captured.out
