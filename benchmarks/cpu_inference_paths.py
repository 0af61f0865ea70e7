"""CPU inference paths for `textclf predict`: PyTorch fp32, PyTorch bf16 autocast, ONNX Runtime
int8 (`--precision int8`), and transformers' pipeline() as the named alternative.

All label SST-5 dev with one model folder; the textclf paths share predict's length-sorted
batches (batch 64). Contenders alternate in shuffled order each round, so load from other
work hits them all; prints seconds per round, the speed ratio to PyTorch fp32 (median of the
per-round ratios: robust on a shared machine), accuracy, its change from fp32 and the share
of predictions equal to fp32's. Skips when ../shared/data/sst5 is absent (accuracy on a
stand-in would mean nothing).

    OMP_NUM_THREADS=1 python benchmarks/cpu_inference_paths.py --model models/classifier
    OMP_NUM_THREADS=1 python benchmarks/cpu_inference_paths.py --model ... --no-amx

--no-amx measures what a CPU without AMX would see, on one that has it: it sets
ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 (oneDNN, hence PyTorch's matmuls, stops at AVX-512
BF16) and re-runs this script with it. ONNX Runtime's int8 kernels (MLAS) use AMX whenever
the kernel grants it and have no switch; to deny it, preload a shim that refuses
arch_prctl(ARCH_REQ_XCOMP_PERM) (LD_PRELOAD=libnoamx.so; not part of this repository).
Without the shim, the int8 row on an AMX machine is an upper bound for other CPUs.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time

import numpy as np
import pandas as pd

from _common import SST5, machine

BATCH = 64


def textclf_paths(folder: str, names: list[str]) -> tuple[dict, object, object]:
    """Runners (texts -> predicted class ids) for the textclf paths, and the loaded model."""
    import torch

    from textclf.model.engines import onnx_int8
    from textclf.model.batching import encode
    from textclf.model.loading import load_classifier
    from textclf.model.engines.pytorch import predict_proba

    cpu = torch.device("cpu")
    model, tokenizer, info = load_classifier(folder, cpu)

    def torch_path(precision):
        def run(texts):
            ids = encode(tokenizer, texts, info.max_length)
            return predict_proba(model, ids, tokenizer.pad_token_id, BATCH, cpu,
                                 precision).argmax(1)
        return run

    runners = {name: torch_path(name[3:]) for name in names if name.startswith("pt_")}
    if "ort_int8" in names:
        start = time.perf_counter()
        int8 = onnx_int8.load_int8(model, folder, info.max_length)
        print(f"ort_int8 session: {time.perf_counter() - start:.1f} s "
              f"({'cached' if int8.reused else 'export + quantize + load'})", flush=True)

        def run_int8(texts):
            ids = encode(tokenizer, texts, info.max_length)
            return onnx_int8.predict_proba(int8, ids, tokenizer.pad_token_id, BATCH).argmax(1)
        runners["ort_int8"] = run_int8
    return runners, model, info


def pipeline_path(folder: str, max_length: int):
    """transformers.pipeline with its defaults (SDPA attention, input order batches)."""
    from transformers import pipeline

    classify = pipeline("text-classification", model=folder, device=-1)
    label2id = classify.model.config.label2id

    def run(texts):
        out = classify(texts, batch_size=BATCH, truncation=True, max_length=max_length)
        return np.array([label2id[o["label"]] for o in out])
    return run


def rounds(runners: dict, texts: list[str], count: int) -> tuple[dict, dict]:
    """Seconds per round and the last predictions, per contender, in shuffled order."""
    for run in runners.values():
        run(texts[:BATCH])  # warm-up: kernels, allocator, lazy imports
    seconds, predicted = {name: [] for name in runners}, {}
    order, shuffle = list(runners), random.Random(0)
    for r in range(count):
        shuffle.shuffle(order)
        for name in order:
            start = time.perf_counter()
            predicted[name] = runners[name](texts)
            seconds[name].append(time.perf_counter() - start)
        print(f"round {r + 1}: " + ", ".join(f"{n} {seconds[n][-1]:.1f} s" for n in runners),
              flush=True)
    return seconds, predicted


def table(seconds: dict, predicted: dict, gold: np.ndarray) -> str:
    base = "pt_fp32"
    base_acc = 100 * (predicted[base] == gold).mean()
    lines = ["| path | s/round, median (range) | texts/s | x PyTorch fp32, median (rounds) "
             "| accuracy % | minus fp32, points | same label as fp32 % |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, times in seconds.items():
        ratios = [b / t for b, t in zip(seconds[base], times)]
        acc = 100 * (predicted[name] == gold).mean()
        lines.append(
            f"| {name} | {statistics.median(times):.2f} ({min(times):.2f}-{max(times):.2f}) "
            f"| {len(gold) / statistics.median(times):.0f} "
            f"| {statistics.median(ratios):.2f} ({', '.join(f'{x:.2f}' for x in ratios)}) "
            f"| {acc:.2f} | {acc - base_acc:+.2f} "
            f"| {100 * (predicted[name] == predicted[base]).mean():.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/classifier", help="a model folder")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--paths", default="pt_fp32,pt_bf16,ort_int8,pipeline",
                        help="comma list of pt_fp32, pt_bf16, ort_int8, pipeline")
    parser.add_argument("--no-amx", action="store_true",
                        help="keep oneDNN (PyTorch) off AMX; see the note above for ORT")
    args = parser.parse_args()
    if args.no_amx and os.environ.get("ONEDNN_MAX_CPU_ISA") != "AVX512_CORE_BF16":
        # oneDNN reads the variable once, when torch loads: set it, then start again.
        os.environ["ONEDNN_MAX_CPU_ISA"] = "AVX512_CORE_BF16"
        os.execv(sys.executable, [sys.executable, *sys.argv])
    if not (SST5 / "dev.csv").is_file():
        print(f"skipped: {SST5 / 'dev.csv'} not found (accuracy needs SST-5 dev)")
        return
    from textclf.model.loading import quiet_transformers

    quiet_transformers()
    names = args.paths.split(",")
    if "pt_fp32" not in names:
        parser.error("--paths must include pt_fp32 (the baseline of every ratio)")
    dev = pd.read_csv(SST5 / "dev.csv")
    texts, gold = dev["text"].tolist(), dev["label"].astype(int).to_numpy()
    runners, model, info = textclf_paths(args.model, names)
    if "pipeline" in names:
        runners["pipeline"] = pipeline_path(args.model, info.max_length)
    print(f"machine: {machine()}")
    print(f"env: ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA')} "
          f"LD_PRELOAD={os.environ.get('LD_PRELOAD')} "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    print(f"data: SST-5 dev, {len(texts)} sentences; model {args.model}; batch {BATCH}")
    seconds, predicted = rounds(runners, texts, args.rounds)
    print(table(seconds, predicted, gold))


if __name__ == "__main__":
    main()
