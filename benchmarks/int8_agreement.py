"""How faithful is int8 to fp32, per way of quantizing, on the CPU at hand or an emulated one?

    python benchmarks/int8_agreement.py --model models/classifier \\
        --texts ../shared/data/sst5/dev.csv --emulate Haswell

For each weight quantization (8-bit weights, what CPUs with VNNI get; 7-bit weights,
`reduce_range`, what CPUs whose kernels saturate get; 8-bit unsigned weights, the u8u8
kernels) it prints the share of labels equal to PyTorch fp32's, the largest probability
difference, and the int8 labelling time beside ONNX Runtime fp32's. `--emulate CPU` runs the
ONNX Runtime part in QEMU's user-mode emulator on that CPU model (Haswell: AVX2, no AVX-512,
no VNNI), so agreement on a CPU kind this machine is not can be measured; times under
emulation say nothing about speed and are not printed. The fp32 reference is computed
natively by PyTorch, as `textclf predict --precision fp32` computes it. Variants that keep
some matrix products in fp32 name them by node-name patterns (`nodes_to_exclude`).
INT8_BATCH=1 in the environment labels one text per batch (activation scales per text).
The `nbits8` variants are ONNX Runtime's weight-only 8-bit MatMulNBits (blocks of 32 to
128 weights share a scale; `accuracy_level` 4 computes in int8 with each block of an
activation row quantized on its own, 0 in fp32): activation scales per token block rather
than per tensor, which dynamic quantization cannot do.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Matrix products kept in fp32 by a variant, as regular expressions over node names.
ATTENTION_SCORES = r"attention/self/MatMul"        # Q.K^T and softmax.V: two activations
HEAD = r"pooler|classifier"
FFN_OUT = r"layer\.\d+/output/dense"
VARIANTS = {  # name: (weight type, reduce_range, node patterns kept in fp32)
    "s8 (8-bit weights)": ("QInt8", False, ()),
    "s7 (reduce_range)": ("QInt8", True, ()),
    "u8 (unsigned weights)": ("QUInt8", False, ()),
    "s8, attention scores fp32": ("QInt8", False, (ATTENTION_SCORES,)),
    "s7, attention scores fp32": ("QInt8", True, (ATTENTION_SCORES,)),
    "s8, scores + head fp32": ("QInt8", False, (ATTENTION_SCORES, HEAD)),
    "s8, scores + FFN out fp32": ("QInt8", False, (ATTENTION_SCORES, FFN_OUT)),
}
# name: (bits, block size, accuracy_level, symmetric): onnxruntime's MatMulNBitsQuantizer
NBITS = {
    "nbits8 b32 int8": (8, 32, 4, True),
    "nbits8 b64 int8 asym": (8, 64, 4, False),
    "nbits8 b128 int8": (8, 128, 4, True),
    "nbits8 b32 fp32": (8, 32, 0, True),
}
BATCH = int(os.environ.get("INT8_BATCH", "64"))


def label(paths: dict[str, str], ids_file: str, pad_id: int) -> dict:
    """{variant: [probabilities, seconds]} from ONNX Runtime, in this process."""
    import onnxruntime as ort

    ids = json.loads(Path(ids_file).read_text())
    order = np.argsort([len(seq) for seq in ids], kind="stable")
    found = {}
    for name, path in paths.items():
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        probs = np.zeros((len(ids), session.get_outputs()[0].shape[-1]), np.float32)
        start = time.perf_counter()
        for i in range(0, len(order), BATCH):
            rows = order[i:i + BATCH]
            width = max(len(ids[r]) for r in rows)
            tokens = np.full((len(rows), width), pad_id, np.int64)
            mask = np.zeros_like(tokens)
            for j, r in enumerate(rows):
                tokens[j, :len(ids[r])], mask[j, :len(ids[r])] = ids[r], 1
            logits = session.run(["logits"], {"input_ids": tokens, "attention_mask": mask})[0]
            exp = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs[rows] = exp / exp.sum(axis=1, keepdims=True)
        found[name] = [probs.tolist(), time.perf_counter() - start]
    return found


def build(model_dir: str, texts: list[str], folder: Path,
          only: str = "") -> tuple[dict, str, int, np.ndarray]:
    """Export and quantize every variant whose name `only` finds; the fp32 reference from
    PyTorch."""
    import onnx
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    from textclf.model.batching import encode
    from textclf.model.engines import onnx_int8
    from textclf.model.engines.pytorch import predict_proba
    from textclf.model.loading import load_classifier

    model, tokenizer, info = load_classifier(model_dir, torch.device("cpu"))
    ids = encode(tokenizer, texts, info.max_length)
    ids_file = folder / "ids.json"
    ids_file.write_text(json.dumps(ids))
    fp32 = predict_proba(model, ids, tokenizer.pad_token_id, BATCH, torch.device("cpu"), "fp32")
    onnx_int8.export_fp32(model, folder / "fp32.onnx")
    paths = {"fp32 (ONNX Runtime)": str(folder / "fp32.onnx")}
    nodes = [node.name for node in onnx.load(folder / "fp32.onnx").graph.node]
    for i, (name, (weights, reduce_range, kept)) in enumerate(VARIANTS.items()):
        if not re.search(only, name):
            continue
        paths[name] = str(folder / f"{i}.onnx")
        quantize_dynamic(str(folder / "fp32.onnx"), paths[name], per_channel=True,
                         weight_type=getattr(QuantType, weights), reduce_range=reduce_range,
                         nodes_to_exclude=[n for n in nodes
                                           if any(re.search(p, n) for p in kept)],
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    for name, (bits, block, accuracy_level, symmetric) in NBITS.items():
        if not re.search(only, name):
            continue
        quantizer = MatMulNBitsQuantizer(onnx.load(folder / "fp32.onnx"), bits=bits,
                                         block_size=block, is_symmetric=symmetric,
                                         accuracy_level=accuracy_level)
        quantizer.process()
        paths[name] = str(folder / f"{name.replace(' ', '-')}.onnx")
        quantizer.model.save_model_to_file(paths[name], use_external_data_format=False)
    return paths, str(ids_file), tokenizer.pad_token_id, fp32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a model folder")
    parser.add_argument("--texts", required=True, help="CSV or Parquet with a text column")
    parser.add_argument("--limit", type=int, default=None, help="first N texts only")
    parser.add_argument("--emulate", metavar="CPU", help="QEMU CPU model, e.g. Haswell")
    parser.add_argument("--only", metavar="REGEX", default="",
                        help="only the variants whose name this finds (ONNX Runtime fp32, "
                             "the speed reference, always runs), e.g. nbits")
    parser.add_argument("--_label", nargs=3, help=argparse.SUPPRESS)  # the emulated half
    args = parser.parse_args()
    if args._label:
        paths, ids_file, pad_id = json.loads(args._label[0]), args._label[1], int(args._label[2])
        print(json.dumps(label(paths, ids_file, pad_id)))
        return

    import logging

    import pandas as pd

    logging.disable(logging.WARNING)
    read = pd.read_parquet if args.texts.endswith(".parquet") else pd.read_csv
    texts = read(args.texts)["text"].astype(str).tolist()[:args.limit]
    with tempfile.TemporaryDirectory(prefix="int8-agreement-") as scratch:
        paths, ids_file, pad_id, fp32 = build(args.model, texts, Path(scratch), args.only)
        if args.emulate:
            run = subprocess.run(["qemu-x86_64", "-cpu", args.emulate, sys.executable, __file__,
                                  "--model", args.model, "--texts", args.texts,
                                  "--_label", json.dumps(paths), ids_file, str(pad_id)],
                                 capture_output=True, text=True, check=True)
            found = json.loads(run.stdout.splitlines()[-1])
        else:
            found = label(paths, ids_file, pad_id)
    where = f"emulated {args.emulate}" if args.emulate else "this CPU"
    print(f"{len(texts)} texts of {args.texts}, model {args.model}, ONNX Runtime on {where}; "
          f"reference: PyTorch fp32")
    print(f"{'variant':26s} {'labels = fp32':>13s} {'max |dp|':>9s} {'seconds':>8s}")
    base = found["fp32 (ONNX Runtime)"][1]
    for name, (probs, seconds) in found.items():
        probs = np.array(probs)
        agree = (probs.argmax(1) == fp32.argmax(1)).mean()
        speed = "" if args.emulate else f"{seconds:8.2f}  ({base / seconds:.2f}x ORT fp32)"
        print(f"{name:26s} {agree:13.2%} {np.abs(probs - fp32).max():9.4f} {speed}")


if __name__ == "__main__":
    main()
