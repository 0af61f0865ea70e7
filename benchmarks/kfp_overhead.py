"""Sweep overhead: the same 2 x 2 grid through `textclf kfp run --local` (kfp.local, each
point clones, pulls, runs and `dvc exp push`es) against DVC's own queue,
`dvc exp run --queue` + `OMP_NUM_THREADS=1 dvc queue start -j 2` + `dvc exp push`.

Both use a tiny 2-layer BERT (built here from a config, like the tests) for one epoch, so
the figures are mostly overhead: process start-up, imports, git and DVC bookkeeping.

    python benchmarks/kfp_overhead.py --rounds 1
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

GRID = ["-S", "train.batch_size=8,16", "-S", "data.class_ratio=[1,1,1,1,1],[2,1,1,1,1]"]
ENV = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid",
       "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid",
       "DVC_NO_ANALYTICS": "1", "OMP_NUM_THREADS": "1"}


def sh(cmd: list, cwd: Path) -> str:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=ENV, check=True,
                          capture_output=True, text=True).stdout


def tiny_model(folder: Path) -> Path:
    """A 2-layer, hidden-size-32 BERT with random weights and the bundled tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from textclf.model.loading import bundled_model_dir

    tokenizer = AutoTokenizer.from_pretrained(bundled_model_dir())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=128, num_labels=5)
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_project(root: Path, model: Path) -> tuple[Path, Path, Path]:
    """A committed copy of the repository (tiny model, 1 epoch), its bare origin, a remote."""
    project, origin, storage = root / "project", root / "origin.git", root / "storage"
    shutil.copytree(REPO, project, ignore=shutil.ignore_patterns(
        ".venv", ".git", "__pycache__", "*.egg-info", "cache", "tmp", "config.local",
        "prepared", "resampled", "classifier", "benchmarks", "reports"))
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["model"]["name"], params["train"]["epochs"] = str(model), 1
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "tiny"],
                ["git", "init", "-q", "--bare", "-b", "main", origin],
                ["git", "remote", "add", "origin", origin], ["git", "push", "-q", "origin", "main"],
                ["dvc", "remote", "modify", "--local", "local", "url", storage]):
        sh(cmd, project)
    return project, origin, storage


def kfp_local(project: Path, origin: Path, storage: Path, name: str) -> float:
    start = time.perf_counter()
    sh(["textclf", "kfp", "run", "--local", "--repo", origin, "--remote", storage,
        "-n", name, "--parallelism", "2", *GRID], project)
    return time.perf_counter() - start


def queue_done(project: Path) -> bool:
    out = sh(["dvc", "queue", "status"], project)
    return not any(word in out for word in ("Queued", "Running"))


def dvc_queue(project: Path, name: str) -> float:
    start = time.perf_counter()
    sh(["dvc", "exp", "run", "--queue", "-n", name, *GRID], project)
    sh(["dvc", "queue", "start", "-j", "2"], project)
    while not queue_done(project):   # each `dvc queue status` costs ~1 s of a core: poll gently
        time.sleep(3)
    names = [f"{name}-{i}" for i in range(1, 5)]
    sh(["dvc", "exp", "push", "origin", *names], project)   # what the KFP points do too
    return time.perf_counter() - start


def pushed(origin: Path, name: str) -> int:
    refs = subprocess.run(["git", "ls-remote", origin, "refs/exps/*"], capture_output=True,
                          text=True, check=True).stdout
    return sum(line.rsplit("/", 1)[-1].startswith(f"{name}-") for line in refs.splitlines())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    print(f"machine: {machine(with_torch=False)}\n")
    times: dict[str, list[float]] = {"kfp.local (2 at once)": [], "dvc queue -j 2": []}
    with tempfile.TemporaryDirectory() as tmp:
        model = tiny_model(Path(tmp) / "tiny-bert")
        project, origin, storage = make_project(Path(tmp), model)
        variants = {"kfp.local (2 at once)": lambda name: kfp_local(project, origin, storage, name),
                    "dvc queue -j 2": lambda name: dvc_queue(project, name)}
        for round_ in range(1, args.rounds + 1):
            for i, (label, sweep) in enumerate(variants.items()):
                name = f"v{i}r{round_}"       # new experiment names every time
                times[label].append(sweep(name))
                assert pushed(origin, name) == 4, f"{label}: not every point was pushed"
                print(f"round {round_}: {label:22s} {times[label][-1]:.1f} s", flush=True)
        subprocess.run(["dvc", "queue", "stop"], cwd=project, env=ENV, capture_output=True)
    queue = statistics.median(times["dvc queue -j 2"])
    print("\n2 x 2 grid, run and pushed, seconds, median (range):")
    for label, values in times.items():
        extra = statistics.median(values) - queue
        print(f"  {label:22s} {summary(values):20s} {extra:+.1f} s against the queue")


if __name__ == "__main__":
    main()
