"""`--precision int8`: the classifier in ONNX Runtime with int8 weights, for CPUs without AMX.

This module exports, quantizes and runs the model; textclf.model.labeller decides when:
`predict` and `serve` take this path with `--precision auto` where bf16 does not pay and
int8 measures faster than fp32 (textclf.model.precision.choose_labelling_precision).

Why this path (benchmarks/cpu_inference_paths.py has the figures): on a CPU without AMX,
bf16 autocast is slower than fp32, and PyTorch's own dynamic quantization is deprecated and
lost 0.8-1.7 points on SST-5 dev. ONNX Runtime's dynamic int8 quantization with per-channel
weight scales ran ~1.6x PyTorch fp32 there and stayed within 0.1 point. Optimum would do
the same, but needs transformers < 4.58, so the export is torch.onnx's and the quantizer
onnxruntime's own.

Weights are quantized to the range this CPU's int8 kernels multiply exactly. Without VNNI,
ONNX Runtime multiplies uint8 activations by int8 weights with an instruction
(VPMADDUBSW) that adds pairs of products into 16 bits and saturates: with full-range
weights, probabilities moved by up to 0.08 against fp32 on an AVX2-only CPU (7.1% of SST-5
dev labels changed). ONNX Runtime's documented remedy is `reduce_range` (7-bit weights: a
pair of products then fits). `int8_saturates` asks the engine itself, with one
MatMulInteger whose exact answer needs more than 16 bits, rather than trusting CPU flags
(a VM or an emulator may show flags the engine does not get).

The quantized model is built once per (weights, max_length, weight range) and cached
outside the model folder (a DVC output):
`$XDG_CACHE_HOME/textclf/onnx/<weights sha256>-<max_length>-<s8 or s7>.onnx`
(`~/.cache/...`). It is written to a scratch file and renamed, under a lock, so parallel
runs build it once and never read half a file; a file that does not load is rebuilt.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from textclf.errors import UserError
from textclf.model.batching import pad_batch, sorted_batches
from textclf.model.loading import weights_sha256
from textclf.outputs import atomic_file, exclusive

INPUTS = ("input_ids", "attention_mask")
OPSET = 17


@dataclass(frozen=True)
class Int8Classifier:
    """An ONNX Runtime session over the int8 model, and where it came from."""
    session: object  # onnxruntime.InferenceSession
    num_labels: int
    path: Path
    reused: bool  # True: loaded from the cache; False: exported and quantized now


def require_onnxruntime():
    """The onnxruntime module, or a UserError naming the extra that installs it."""
    try:
        import onnx  # noqa: F401  (the quantizer needs it)
        import onnxruntime
    except ImportError:
        raise UserError("--precision int8 needs ONNX Runtime, a dependency of textclf that "
                        "is missing here: pip install onnxruntime onnx") \
            from None
    return onnxruntime


def cache_path(folder: str | Path, max_length: int, reduce_range: bool) -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    weights = "s7" if reduce_range else "s8"
    return (Path(cache) / "textclf" / "onnx" /
            f"{weights_sha256(folder)}-{max_length}-{weights}.onnx")


@functools.cache
def int8_saturates() -> bool:
    """Whether ONNX Runtime's uint8 x int8 matrix products saturate on this CPU (no VNNI):
    255 x 127 summed over 64 products is 2,072,640 exactly, 1,048,544 when pairs are
    clipped to 16 bits. Then weights must be quantized with reduce_range."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    depth = 64
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "saturation_probe",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [4, depth])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [4, 8])],
        [numpy_helper.from_array(np.full((depth, 8), 127, np.int8), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # what ONNX Runtime 1.20+ reads, whatever onnx writes by default
    ort = require_onnxruntime()
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    product = session.run(["y"], {"a": np.full((4, depth), 255, np.uint8)})[0]
    return bool((product != depth * 255 * 127).any())


class _Logits(torch.nn.Module):
    """Two inputs in, logits out: the graph ONNX Runtime runs (token_type_ids, where the
    model has them, default to zeros inside it, as in the PyTorch path)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def export_fp32(model, path: Path) -> None:
    """The fp32 graph with batch and length dynamic. The TorchScript exporter
    (dynamo=False) is used because it needs no onnxscript; the sample batch has padding so
    that tracing keeps the attention-mask arithmetic rather than a no-padding shortcut."""
    sample = pad_batch([[101, 2000, 2001, 2002, 102], [101, 2003, 102]], 0)
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
            "logits": {0: "batch"}}
    with torch.no_grad(), warnings.catch_warnings():
        # Python branches on shapes are traced once; with a padded sample they take the
        # general path, and the export test checks the graph against PyTorch. The
        # exporter's advice on negative gather indices does not apply: position and
        # token-type indices are never negative.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", "Exporting aten::index operator", UserWarning)
        # eval() on the wrapper, not only the model: the exporter restores the wrapper's
        # mode afterwards, and a fresh Module is in training mode (dropout on).
        torch.onnx.export(_Logits(model).eval(), (sample["input_ids"], sample["attention_mask"]),
                          str(path), dynamo=False, opset_version=OPSET, input_names=list(INPUTS),
                          output_names=["logits"], dynamic_axes=axes)


def quantize(source: Path, target: Path, reduce_range: bool = False) -> None:
    """Dynamic int8: weights quantized ahead of time with one scale per output channel
    (per-tensor scales cost 8 points of agreement with fp32 on SST-5), activations per
    batch at run time. `reduce_range`: 7-bit weights, for kernels that saturate
    (`int8_saturates`)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # DefaultTensorType: the TorchScript graph leaves some shapes uninferred; FLOAT is what
    # they are, and the quantizer refuses to guess otherwise.
    # The quantizer logs a "consider pre-processing" advice on the root logger at every
    # call; pre-processing (shape inference) is what DefaultTensorType stands in for.
    logging.disable(logging.WARNING)
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8,
                         per_channel=True, reduce_range=reduce_range,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        logging.disable(logging.NOTSET)


def build_int8(model, target: Path, reduce_range: bool) -> None:
    """Export to a temporary folder, quantize onto a scratch file beside `target`, and
    rename it onto `target` in one step (textclf.outputs.atomic_file)."""
    with tempfile.TemporaryDirectory(prefix="textclf-onnx-") as scratch_dir, \
            atomic_file(target) as scratch:
        fp32 = Path(scratch_dir) / "model.onnx"
        export_fp32(model, fp32)
        quantize(fp32, scratch, reduce_range)


def open_session(path: Path, threads: int):
    ort = require_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _usable(session, num_labels: int) -> bool:
    names = [i.name for i in session.get_inputs()]
    return names == list(INPUTS) and session.get_outputs()[0].shape[-1] == num_labels


def load_int8(model, folder: str | Path, max_length: int, threads: int | None = None,
              cache: Path | None = None) -> Int8Classifier:
    """The int8 session for `model` (loaded from `folder`), from the cache or built now.
    Threads: torch's intra-op count unless given, so OMP_NUM_THREADS holds for both."""
    require_onnxruntime()
    reduce_range = int8_saturates()
    path = cache or cache_path(folder, max_length, reduce_range)
    threads = threads or torch.get_num_threads()
    num_labels = model.config.num_labels
    with exclusive(path):  # parallel runs: one builds, the others wait and reuse
        if path.is_file():
            try:
                session = open_session(path, threads)
                if _usable(session, num_labels):
                    print(f"int8: reusing {path}", file=sys.stderr)
                    return Int8Classifier(session, num_labels, path, reused=True)
            except Exception as err:  # noqa: BLE001 - ORT raises its own types for bad files
                reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:120]
                print(f"int8: {path} does not load ({reason}); rebuilding it",
                      file=sys.stderr)
        print(f"int8: exporting and quantizing {folder} -> {path}"
              + (" (7-bit weights: this CPU's int8 kernels saturate 8-bit ones)"
                 if reduce_range else ""), file=sys.stderr)
        try:
            build_int8(model, path, reduce_range)
        except OSError as err:
            raise UserError(f"{path.parent}: cannot write the int8 model there ({err}); "
                            f"expected a writable cache folder: set XDG_CACHE_HOME") from None
        return Int8Classifier(open_session(path, threads), num_labels, path, reused=False)


def int8_seconds(repeats: int = 5) -> dict[str, float]:
    """Best time of a MiniLM layer's feed-forward block (16 texts x 32 tokens x 384 ->
    1536 -> 384) in PyTorch fp32 and in ONNX Runtime with int8 weights, quantized by
    `quantize`, on torch's thread count; the two alternate."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    torch.manual_seed(0)
    up, down = torch.randn(384, 1536) * 0.05, torch.randn(1536, 384) * 0.05
    x = torch.randn(16 * 32, 384)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "up"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "down"], ["y"])], "feed_forward",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["tokens", 384])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["tokens", 384])],
        [numpy_helper.from_array(up.numpy(), "up"), numpy_helper.from_array(down.numpy(), "down")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what ONNX Runtime 1.20+ reads, whatever onnx writes by default
    with tempfile.TemporaryDirectory(prefix="textclf-int8-") as folder:
        fp32_path, int8_path = Path(folder) / "fp32.onnx", Path(folder) / "int8.onnx"
        onnx.save(model, fp32_path)
        quantize(fp32_path, int8_path, int8_saturates())
        session = open_session(int8_path, torch.get_num_threads())
    feed = {"x": x.numpy()}
    best = {"fp32": float("inf"), "int8": float("inf")}
    with torch.inference_mode():
        for _ in range(repeats + 1):  # the first round warms caches and kernels up
            start = time.perf_counter()
            torch.relu(x @ up) @ down
            best["fp32"] = min(best["fp32"], time.perf_counter() - start)
            start = time.perf_counter()
            session.run(["y"], feed)
            best["int8"] = min(best["int8"], time.perf_counter() - start)
    return best


def predict_proba(classifier: Int8Classifier, ids: Sequence[Sequence[int]], pad_id: int,
                  batch_size: int) -> np.ndarray:
    """Class probabilities (N, C) in input order: the contract and the length-sorted,
    padded batches of textclf.model.engines.pytorch.predict_proba."""
    probs = np.zeros((len(ids), classifier.num_labels), dtype=np.float32)
    for rows in sorted_batches([len(seq) for seq in ids], batch_size):
        batch = pad_batch([ids[i] for i in rows], pad_id)
        logits = classifier.session.run(["logits"], {k: batch[k].numpy() for k in INPUTS})[0]
        probs[rows] = torch.from_numpy(logits).float().softmax(dim=-1).numpy()
    return probs
