"""Training survives interruption: kill -9 or SIGTERM mid-epoch, `dvc repro` resumes, and the
result equals an uninterrupted run; a checkpoint of other params is not used."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import GIT_IDENTITY, REPO, run, set_params, toy_reviews
from textclf.training.checkpoint import CheckpointStore, fingerprint_run


EPOCHS = 4
OUTPUTS = ["metrics/train/metrics.json", "metrics/train/plots/metrics/train/loss.tsv",
           "metrics/train/plots/metrics/val/f1_macro.tsv", "metrics/evaluate/metrics.json"]


@pytest.fixture
def resumable(project, tiny_model_dir, tmp_path, monkeypatch) -> Path:
    """A project on toy data whose epochs take 2-3 seconds, checkpoints in tmp_path."""
    toy_reviews(per_class=150).to_csv(project / "data" / "toy.csv", index=False)
    set_params(project, data={"path": "data/toy.csv"},
               model={"name": str(tiny_model_dir)},
               train={"epochs": EPOCHS, "batch_size": 2, "precision": "fp32"})
    monkeypatch.setenv("TEXTCLF_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("TEXTCLF_CHECKPOINT_INTERVAL", "0")  # kill -9 finds epoch 2 saved
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return project


def checkpoint_position(folder: Path) -> tuple[int, int] | None:
    """(epochs done, batches into the next) of the checkpoint in `folder`, if any."""
    for path in folder.glob("*.pt"):
        try:
            state = torch.load(path, weights_only=True)["state"]
        except (RuntimeError, EOFError, OSError):
            return None  # being replaced right now
        return state["epoch"], state["step"]
    return None


# tqdm's bar for epoch 3 once a batch of it is done: "epoch 3/4:   2%|▏    | 3/180 [".
EPOCH_3_BATCH = re.compile(rb"epoch 3/%d:[^\r\n]*?\| *([1-9][0-9]*)/([0-9]+) \[" % EPOCHS)


class Output:
    """A subprocess's merged output, read on a thread as it comes, so that tqdm's
    carriage-return updates can be watched while the process runs."""

    def __init__(self, pipe) -> None:
        self.chunks: list[bytes] = []
        self.thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self.thread.start()

    def _read(self, pipe) -> None:
        for chunk in iter(lambda: pipe.read1(65536), b""):
            self.chunks.append(chunk)

    def text(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")

    def raw(self) -> bytes:
        return b"".join(self.chunks)


def interrupt_in_epoch_3(project: Path, sig: int) -> tuple[subprocess.CompletedProcess, int]:
    """Start `dvc repro`; once epoch 2's checkpoint is on disk and the progress bar shows a
    batch of epoch 3 done, send `sig` (to the training process for SIGTERM, else to the
    whole job). Returns the ended run and the epoch-3 batch the bar showed then."""
    checkpoints = Path(os.environ["TEXTCLF_CHECKPOINT_DIR"])
    env = {**os.environ, **GIT_IDENTITY, "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.Popen(["dvc", "repro"], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    output = Output(proc.stdout)
    try:
        # The deadline is only there to fail a stuck run with a message, not a speed claim.
        deadline, seen, position, batch = time.monotonic() + 600, None, None, None
        while position != (2, 0) or batch is None:
            assert proc.poll() is None, f"training ended before epoch 3:\n{output.text()[-3000:]}"
            assert time.monotonic() < deadline, (
                f"no checkpoint of epoch 2 and batch of epoch 3 in 600 s (checkpoint {position}, "
                f"epoch-3 batch {batch}):\n{output.text()[-3000:]}")
            time.sleep(0.02)
            shown = EPOCH_3_BATCH.findall(output.raw())
            if shown:
                batch = int(shown[-1][0])
                assert batch < int(shown[-1][1]), "epoch 3 ended before it was seen"
            if position == (2, 0):
                continue
            # Load a checkpoint only when it is new: loading it 50 times a second would take
            # the CPU the training needs.
            try:
                stamp = [(path, path.stat().st_mtime_ns) for path in checkpoints.glob("*.pt")]
            except FileNotFoundError:
                continue                      # replaced between listing and stat
            if stamp != seen:
                position = checkpoint_position(checkpoints)
                seen = stamp if position is not None else None
                assert position is None or position <= (2, 0), "epoch 3 ended before it was seen"
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # leave no training behind a failed test
        proc.wait()
        raise
    if sig == signal.SIGTERM:
        # What `dvc queue kill` / a scheduler does: the training process gets SIGTERM.
        train = subprocess.run(["pgrep", "-s", str(proc.pid), "-f", "bin/textclf train"],
                               capture_output=True, text=True).stdout.split()
        assert train, "textclf train is not running"
        os.kill(int(train[0]), sig)
    else:
        os.killpg(proc.pid, sig)  # kill -9 of the whole job
    proc.wait(timeout=600)
    output.thread.join(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, output.text(), ""), batch


def snapshot(project: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    weights = load_file(project / "models" / "classifier" / "model.safetensors")
    return weights, {name: (project / name).read_text() for name in OUTPUTS}


def assert_same_training(a, b) -> None:
    weights_a, files_a = a
    weights_b, files_b = b
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        # Same ops in the same order on the same CPU threads: bit-identical is expected;
        # 1e-6 allows only for a different summation order in a library kernel.
        torch.testing.assert_close(weights_a[name], weights_b[name], rtol=0, atol=1e-6)
    assert files_a == files_b


@pytest.mark.slow
def test_resume_after_kill_and_sigterm_equals_uninterrupted_run(resumable):
    project, checkpoints = resumable, Path(os.environ["TEXTCLF_CHECKPOINT_DIR"])
    run(["dvc", "repro"], project)
    uninterrupted = snapshot(project)
    assert not list(checkpoints.glob("*.pt")), "a finished training removes its checkpoint"

    # kill -9 of the whole job in epoch 3: the next `dvc repro` resumes after epoch 2.
    killed, _ = interrupt_in_epoch_3_after_force(project)
    assert killed.returncode != 0
    assert checkpoint_position(checkpoints) == (2, 0)
    resumed = run(["dvc", "repro"], project)
    assert "resuming from checkpoint" in resumed.stdout
    assert "continuing at epoch 3 of 4" in resumed.stdout, resumed.stdout[-3000:]
    assert_same_training(snapshot(project), uninterrupted)
    assert not list(checkpoints.glob("*.pt"))

    # SIGTERM mid-epoch: a checkpoint inside epoch 3, exit 143, then the same result.
    stopped, shown = interrupt_in_epoch_3_after_force(project, signal.SIGTERM)
    assert "stopped by SIGTERM in epoch 3" in stopped.stdout, stopped.stdout[-3000:]
    epoch, step = checkpoint_position(checkpoints)
    assert epoch == 2 and step >= shown > 0      # no earlier than the batch the bar showed

    resumed = run(["dvc", "repro"], project)
    assert f"continuing at epoch 3 of 4, batch {step + 1}" in resumed.stdout, resumed.stdout
    assert_same_training(snapshot(project), uninterrupted)


def interrupt_in_epoch_3_after_force(project: Path, sig: int = signal.SIGKILL):
    """Make `train` out of date (so `dvc repro` runs it) and interrupt it in epoch 3."""
    (project / "models" / "classifier" / "model.safetensors").unlink()
    return interrupt_in_epoch_3(project, sig)


def test_a_checkpoint_of_other_params_is_not_used_and_says_why(tmp_path):
    params = {"model": {"name": "m"}, "train": {"lr": 0.0001, "resume": True}}
    first = CheckpointStore(tmp_path, fingerprint_run(params, {"train": "aa"}, "models/c"))
    first.save({"epoch": 2})
    assert first.find()[0] == first.path and first.load() == {"epoch": 2}

    changed = {"model": {"name": "m"}, "train": {"lr": 0.0002, "resume": True}}
    other = CheckpointStore(tmp_path, fingerprint_run(changed, {"train": "aa"}, "models/c"))
    found, why = other.find()
    assert found is None
    assert "(changed: train.lr 0.0001 -> 0.0002); starting fresh" in why
    new_data = CheckpointStore(tmp_path, fingerprint_run(params, {"train": "bb"}, "models/c"))
    assert "(changed: the data)" in new_data.find()[1]
    # train.resume decides whether to look, not what the run computes.
    no_resume = {"model": {"name": "m"}, "train": {"lr": 0.0001, "resume": False}}
    assert fingerprint_run(no_resume, {"train": "aa"}, "models/c").digest == first.run.digest

    first.remove()
    assert not list(tmp_path.iterdir())


def test_a_background_save_writes_the_state_as_it_was_when_asked(tmp_path, monkeypatch):
    params = {"model": {"name": "m"}, "train": {"lr": 0.0001, "resume": True}}
    store = CheckpointStore(tmp_path, fingerprint_run(params, {"train": "aa"}, "models/c"))
    weights = torch.zeros(1000)
    store.save_in_background({"epoch": 1, "weights": weights})
    weights += 1                                  # training goes on changing the tensors
    store.wait()
    saved = store.load()
    assert saved["epoch"] == 1 and torch.equal(saved["weights"], torch.zeros(1000))
    store.save_in_background({"epoch": 2, "weights": weights})
    store.remove()                                # waits for the write, then removes it
    assert not list(tmp_path.iterdir())

    def full_disk(self, state):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(CheckpointStore, "_write", full_disk)
    store.save_in_background({"epoch": 3})
    with pytest.raises(OSError, match="No space left"):
        store.wait()                              # a failed write is not lost
    store.wait()                                  # and raised once


def in_process_training(tiny_model_dir: Path, tmp_path: Path, epochs: int = 2):
    """A function that runs `textclf train` in this process on toy data (its checkpoints
    in tmp_path/checkpoints), with train.resume and extra arguments as given."""
    import yaml

    from conftest import LABELS, REPO
    from textclf import train
    from textclf.data.dataset import write_labels, write_split

    data = toy_reviews(per_class=12)
    write_split(data, tmp_path / "train.parquet")
    write_split(data.iloc[::3], tmp_path / "val.parquet")
    write_labels(LABELS, tmp_path / "labels.json")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"]["name"] = str(tiny_model_dir)
    params["train"].update(epochs=epochs, batch_size=8, precision="fp32")

    def train_run(resume: bool = True, *extra: str) -> None:
        params["train"]["resume"] = resume
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        train.main(["--params", str(tmp_path / "params.yaml"),
                    "--train", str(tmp_path / "train.parquet"),
                    "--val", str(tmp_path / "val.parquet"),
                    "--labels", str(tmp_path / "labels.json"),
                    "--model-dir", str(tmp_path / "model"), "--live-dir", str(tmp_path / "live"),
                    "--checkpoint-dir", str(tmp_path / "checkpoints"), *extra])

    return train_run


def test_a_stopped_run_resumes_and_resume_false_starts_fresh(tiny_model_dir, tmp_path,
                                                              monkeypatch, capsys):
    """In-process: a stop request mid-epoch saves a checkpoint and exits 143; the same run
    resumes from it; with train.resume false it is deleted and training starts fresh."""
    from textclf import train

    train_run = in_process_training(tiny_model_dir, tmp_path)
    checkpoints = tmp_path / "checkpoints"

    def stopped(self):  # as if SIGTERM arrived during the first batch
        self.signal = signal.SIGTERM
        return True

    for resume in (True, False):
        with monkeypatch.context() as patch:
            patch.setattr(train.StopRequest, "__call__", stopped)
            with pytest.raises(SystemExit) as exit_info:
                train_run(resume=True)
        assert exit_info.value.code == 143
        assert checkpoint_position(checkpoints) == (0, 1)
        assert not list(tmp_path.glob(".model.tmp-*")), "nothing half-written"
        capsys.readouterr()
        train_run(resume=resume)
        out = capsys.readouterr().out
        if resume:
            assert "continuing at epoch 1 of 2, batch 2" in out
        else:
            assert "train.resume is false: starting fresh" in out
            assert "continuing at epoch" not in out
        assert not list(checkpoints.glob("*.pt"))
        assert (tmp_path / "model" / "model.safetensors").is_file()


def test_a_run_whose_starting_weights_changed_does_not_resume(tiny_model_dir, tmp_path,
                                                            monkeypatch, capsys):
    """The folder a run starts from (model.name here; model.init_from alike) is retrained
    between a stop and the rerun: the checkpoint is of another computation."""
    from textclf import train

    base = Path(shutil.copytree(tiny_model_dir, tmp_path / "base"))
    train_run = in_process_training(base, tmp_path)
    with monkeypatch.context() as patch:
        patch.setattr(train.StopRequest, "__call__",
                      lambda self: setattr(self, "signal", signal.SIGTERM) or True)
        with pytest.raises(SystemExit):
            train_run(resume=True)
    assert checkpoint_position(tmp_path / "checkpoints") == (0, 1)
    weights = base / "model.safetensors"
    save_file({k: v + 0.01 for k, v in load_file(weights).items()}, weights)
    capsys.readouterr()

    train_run(resume=True)

    out = capsys.readouterr().out
    assert "(changed: the weights it starts from); starting fresh" in out, out
    assert "continuing at epoch" not in out


def test_bad_split_files_given_to_train_get_one_line(tiny_model_dir, tmp_path, capsys):
    """`textclf train` run by hand (not through dvc.yaml): a missing split, a labels file
    that lacks a split's label, or is not one, are named before any training."""
    from textclf import train
    from textclf.data.dataset import write_labels

    in_process_training(tiny_model_dir, tmp_path)         # writes the splits and labels
    write_labels(["very negative", "negative"], tmp_path / "two.json")
    (tmp_path / "broken.json").write_text('["negative"]')
    base = ["--params", str(tmp_path / "params.yaml"), "--val", str(tmp_path / "val.parquet"),
            "--model-dir", str(tmp_path / "model"), "--live-dir", str(tmp_path / "live")]
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text().replace(
        "sentence-transformers/all-MiniLM-L6-v2", str(tiny_model_dir)))
    cases = [
        (["--train", str(tmp_path / "nope.parquet"), "--labels", str(tmp_path / "labels.json")],
         f"error: {tmp_path / 'nope.parquet'}: file not found"),
        (["--train", str(tmp_path / "train.parquet"), "--labels", str(tmp_path / "two.json")],
         f"error: {tmp_path / 'train.parquet'}: column 'label', 36 bad row(s) (rows 25, 26, "
         f"27, 28, 29 and 31 more): expected one of the labels file's labels (very negative, "
         f"negative)"),
        (["--train", str(tmp_path / "train.parquet"), "--labels", str(tmp_path / "broken.json")],
         f"error: {tmp_path / 'broken.json'}: expected a labels file as prepare writes it"),
    ]
    for flags, error in cases:
        with pytest.raises(SystemExit) as stop:
            train.main([*base, *flags])
        assert stop.value.code == 2
        assert capsys.readouterr().err.startswith(error)
    assert not (tmp_path / "model").exists()


def test_epoch_end_checkpoints_follow_the_interval(tiny_model_dir, tmp_path, monkeypatch):
    """With --checkpoint-interval 0 every epoch but the last is checkpointed; with the
    default (60 s, longer than this toy training) none is; the interval counts from the
    last save."""
    from textclf.training import checkpoint

    written = []
    monkeypatch.setattr(checkpoint.CheckpointStore, "_write",
                        lambda self, state: written.append((state["epoch"], state["step"])))
    train_run = in_process_training(tiny_model_dir, tmp_path, epochs=3)
    train_run(True, "--checkpoint-interval", "0")
    assert written == [(1, 0), (2, 0)]
    written.clear()
    monkeypatch.delenv(checkpoint.INTERVAL_ENV, raising=False)
    train_run(True)
    assert written == []
    monkeypatch.setenv(checkpoint.INTERVAL_ENV, "0")
    train_run(True)
    assert written == [(1, 0), (2, 0)]

    now = [100.0]
    params = {"model": {"name": "m"}, "train": {"lr": 0.0001}}
    store = CheckpointStore(tmp_path / "c", fingerprint_run(params, {}, "models/c"),
                            interval_s=30, clock=lambda: now[0])
    assert not store.due()
    now[0] = 130.0
    assert store.due()
    store.save_in_background({"epoch": 1, "step": 0})
    store.wait()
    assert not store.due()                        # counted again from that save
    now[0] = 160.0
    assert store.due()


@pytest.mark.parametrize("flag, env, named", [
    (["--checkpoint-interval", "-5"], None, "--checkpoint-interval: expected seconds"),
    (["--checkpoint-interval", "soon"], None, "found 'soon'"),
    ([], "nan", "$TEXTCLF_CHECKPOINT_INTERVAL: expected seconds"),
])
def test_a_bad_checkpoint_interval_is_refused_before_training(flag, env, named, monkeypatch,
                                                              capsys):
    from textclf import train

    if env is not None:
        monkeypatch.setenv("TEXTCLF_CHECKPOINT_INTERVAL", env)
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--train", "t", "--val", "v", "--labels", "l", "--model-dir", "m",
                    "--live-dir", "d", *flag])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err
