"""Whole processes, the way users run them: `textclf train` against a Hugging Face `Trainer`
script, and `textclf predict --input` against a `pipeline()` script (hf_baseline.py).
Start-up, imports, model load, validation and saving are all inside the timings.

Train: the first 2,000 shuffled SST-5 training sentences, 1 epoch, batch 32, lr 1e-4,
max length 128, the bundled MiniLM; each process also scores SST-5 dev (1,101 sentences)
and saves its model folder. Contenders: `textclf train` (params.yaml defaults, `precision:
auto`); the Trainer with group_by_length + dynamic padding in bf16 and in fp32 (its best
configuration is whichever is faster on the CPU at hand).
Predict: the 8,544 SST-5 training sentences, CSV in, CSV out, with the model the first
`textclf train` made. Contenders: `textclf predict` with `--precision auto`, `fp32` and
`int8`; `pipeline("text-classification")` at batch 32.

Contenders alternate (A B C A B C ...) after one untimed warm-up run each (so caches that
a user's second run finds, such as the int8 model, exist; the int8 build is timed apart).
Prints wall seconds (median and range), the ratios of the medians, and accuracies.

    python benchmarks/whole_process.py --rounds 3
    python benchmarks/whole_process.py --rounds 3 --no-amx   # a CPU without AMX, emulated

--no-amx runs every process with ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 (oneDNN, hence
PyTorch, stops at AVX512-BF16) and, when gcc is there, LD_PRELOAD of noamx.c (built into
a temporary folder) so that ONNX Runtime is refused AMX too (see cpu_inference_paths.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from _common import LABELS, REPO, sst5_or_standin, summary

HERE = Path(__file__).resolve().parent


def no_amx_env(scratch: Path) -> dict[str, str]:
    env = {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}
    if shutil.which("gcc"):
        shim = scratch / "libnoamx.so"
        subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(shim), str(HERE / "noamx.c"),
                        "-ldl"], check=True)
        env["LD_PRELOAD"] = str(shim)
    else:
        print("warning: no gcc; ONNX Runtime may still use AMX (int8 row is an upper bound)")
    return env


def write_inputs(work: Path, n_train: int) -> tuple[str, int]:
    """Parquet splits + labels.json for the train processes, a CSV of texts for predict."""
    train, dev, source = sst5_or_standin(n_train)
    train.to_parquet(work / "train.parquet", index=False)
    dev.to_parquet(work / "val.parquet", index=False)
    (work / "labels.json").write_text(json.dumps({"labels": LABELS}))
    full, _, _ = sst5_or_standin(8544)
    full.to_csv(work / "texts.csv", index=False)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"].update(epochs=1, batch_size=32, lr=1e-4)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return source, len(full)


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def train_commands(work: Path, model: str) -> dict[str, list[str]]:
    base = ["--train", str(work / "train.parquet"), "--val", str(work / "val.parquet"),
            "--labels", str(work / "labels.json")]
    trainer = [sys.executable, str(HERE / "hf_baseline.py"), "train", "--model", model, *base]
    return {
        "textclf train": ["textclf", "train", "--params", str(work / "params.yaml"), *base,
                          "--model-dir", str(work / "m_textclf"), "--live-dir",
                          str(work / "live"), "--checkpoint-dir", str(work / "ckpt")],
        "Trainer bf16": [*trainer, "--out", str(work / "m_trainer_bf16"), "--bf16"],
        "Trainer fp32": [*trainer, "--out", str(work / "m_trainer_fp32")],
    }


def predict_commands(work: Path) -> dict[str, list[str]]:
    model, texts = str(work / "model"), str(work / "texts.csv")
    textclf = ["textclf", "predict", "--model", model, "--input", texts]
    commands = {f"textclf predict {p}": [*textclf, "--output", str(work / f"out_{p}.csv"),
                                         "--precision", p]
                for p in ("auto", "fp32", "int8")}
    commands["pipeline()"] = [sys.executable, str(HERE / "hf_baseline.py"), "predict",
                              "--model", model, "--input", texts,
                              "--output", str(work / "out_pipeline.csv")]
    return commands


def train_accuracy(name: str, stdout: str, work: Path) -> float:
    if name.startswith("textclf"):
        summary_ = json.loads((work / "live" / "metrics.json").read_text())
        return summary_["best"]["val_accuracy"]
    return json.loads(stdout.strip().splitlines()[-1])["val_accuracy"]


def predict_accuracy(name: str, work: Path) -> float:
    import pandas as pd

    out = "out_pipeline.csv" if name == "pipeline()" else f"out_{name.split()[-1]}.csv"
    frame = pd.read_csv(work / out, dtype={"predicted_label": str, "label": str})
    return float((frame["predicted_label"] == frame["label"]).mean())


def race(commands: dict[str, list[str]], rounds: int, env: dict, work: Path,
         accuracy) -> dict[str, list[float]]:
    seconds = {name: [] for name in commands}
    for name, cmd in commands.items():                      # warm-up, untimed
        timed(cmd, env, work)
    for round_ in range(rounds):
        for name, cmd in commands.items():
            elapsed, stdout = timed(cmd, env, work)
            seconds[name].append(elapsed)
            print(f"round {round_ + 1}: {name:22s} {elapsed:6.1f} s, accuracy "
                  f"{accuracy(name, stdout, work):.4f}", flush=True)
    return seconds


def table(seconds: dict[str, list[float]], baseline: str, accuracy) -> None:
    print(f"\n| contender | seconds, median (range) | x {baseline} | accuracy |\n"
          f"| --- | --- | --- | --- |")
    base = statistics.median(seconds[baseline])
    for name, values in seconds.items():
        print(f"| {name} | {summary(values)} | {base / statistics.median(values):.2f} | "
              f"{accuracy(name):.2%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=2000, help="training sentences")
    parser.add_argument("--no-amx", action="store_true", help="emulate a CPU without AMX")
    parser.add_argument("--skip", choices=["train", "predict"], help="leave one part out")
    args = parser.parse_args()
    from textclf.model.loading import bundled_model_dir

    with tempfile.TemporaryDirectory(prefix="whole-process-") as scratch:
        work = Path(scratch)
        env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache"), "HF_HUB_OFFLINE": "1",
               "TRANSFORMERS_VERBOSITY": "error"}
        if args.no_amx:
            env.update(no_amx_env(work))
        facts = subprocess.run([sys.executable, "-c", "import _common; print(_common.machine())"],
                               cwd=HERE, env=env, capture_output=True, text=True).stdout.strip()
        source, n_texts = write_inputs(work, args.samples)
        print(f"machine: {facts}" + (" (AMX hidden: " + ", ".join(
            f"{k}={Path(v).name}" for k, v in env.items()
            if k in ("ONEDNN_MAX_CPU_ISA", "LD_PRELOAD")) + ")" if args.no_amx else ""))
        print(f"data: {source}; predict: {n_texts} texts; {args.rounds} rounds\n")

        if args.skip != "train":
            commands = train_commands(work, str(bundled_model_dir()))
            results = {}                            # the latest accuracy of each contender

            def score(name: str, stdout: str, folder: Path) -> float:
                results[name] = train_accuracy(name, stdout, folder)
                return results[name]

            seconds = race(commands, args.rounds, env, work, score)
            trainer_best = min(("Trainer bf16", "Trainer fp32"),
                               key=lambda n: statistics.median(seconds[n]))
            print(f"\ntrain, whole processes (Trainer's best here: {trainer_best})")
            table(seconds, trainer_best, lambda n: results[n])
        if args.skip != "predict":
            model = work / "model"
            if (work / "m_textclf").is_dir():
                shutil.copytree(work / "m_textclf", model)
            else:                                   # --skip train: one training run
                cmd = train_commands(work, str(bundled_model_dir()))["textclf train"]
                timed(cmd, env, work)
                shutil.copytree(work / "m_textclf", model)
            build, _ = timed(predict_commands(work)["textclf predict int8"], env, work)
            print(f"\nint8: first predict, building the ONNX model: {build:.1f} s")
            seconds = race(predict_commands(work), args.rounds, env, work,
                           lambda n, out, w: predict_accuracy(n, w))
            print(f"\npredict {n_texts} texts, whole processes")
            table(seconds, "pipeline()", lambda n: predict_accuracy(n, work))


if __name__ == "__main__":
    main()
