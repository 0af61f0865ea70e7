"""The device a model computes on and its precision: `precision: auto` on a CPU takes bf16,
or int8 for labelling, only where faster than fp32 here.

Whether bf16 autocast pays depends on more than an instruction flag: with AMX it is
several times faster than fp32; with AVX512-BF16 alone the casts around each matmul can
cost more than the matmul saves (measured 11.2 s fp32 vs 15.5 s bf16 for one predict on
such a CPU). So the choice is a short measurement of one transformer layer, the shape of
this project's models, forward (inference) or forward + backward (training), in both
precisions. It runs once per CPU, torch version and thread count, and is cached in
`$XDG_CACHE_HOME/textclf/precision.json` (`~/.cache/...`); delete it to measure again.

Labelling new texts (`predict`, `serve`) has a third path where bf16 does not pay: ONNX
Runtime with int8 weights (textclf.model.engines.onnx_int8; same SST-5 dev accuracy as fp32
for an SST-5 model, 1.8x its speed without AMX, but about 7% of labels differ from fp32's
on texts unlike the training data, benchmarks/README.md). It is chosen where ONNX Runtime
is installed and its int8 matmuls, quantized as that module quantizes the model, measure at
least MIN_SPEEDUP x PyTorch's fp32 on the feed-forward block of a MiniLM layer; cached the
same way, per ONNX Runtime version too. `evaluate`'s `auto` scores the PyTorch model;
`evaluate.precision: int8` scores the int8 one.

On a CUDA GPU bf16 (fp16 where bf16 is unsupported) is measured too, on one layer the shape
of the model at hand: a small model such as MiniLM is bound by kernel launches there, and
autocast's casts made labelling 2x slower than fp32 on an H200 (benchmarks/README.md, GPU),
while a large model gains. Cached per GPU, torch version, layer shape and purpose.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import torch

from textclf.outputs import exclusive

Purpose = Literal["train", "infer"]
# bf16 and int8 lose precision: take them only for a clear gain, not for measurement noise.
MIN_SPEEDUP = 1.15


def cache_path() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "textclf" / "precision.json"


FLAGS = ("avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_facts() -> tuple[str, frozenset[str] | None]:
    """(CPU model, the FLAGS it has), from /proc/cpuinfo; flags None where unknown."""
    model, flags = platform.processor(), None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not model.strip():
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = frozenset(f for f in line.split(":", 1)[1].split() if f in FLAGS)
                break
    except OSError:
        pass
    return model, flags


# oneDNN's documented switch for the newest instruction set its kernels may use (PyTorch's
# bf16 matmuls run on oneDNN): a cap below AMX makes an AMX CPU behave like one without.
ISA_CAP = "ONEDNN_MAX_CPU_ISA"


def usable_flags(flags: frozenset[str] | None,
                 cap: str | None = None) -> frozenset[str] | None:
    """`flags` less what ONEDNN_MAX_CPU_ISA (`cap`; read from the environment when None)
    forbids oneDNN to use: AMX unless the cap names it, AVX512-BF16 unless the cap is at
    least AVX512_CORE_BF16. No cap, or DEFAULT / ALL: the flags as they are."""
    cap = (os.environ.get(ISA_CAP, "") if cap is None else cap).strip().upper()
    if flags is None or cap in ("", "ALL", "DEFAULT"):
        return flags
    if "AMX" not in cap:
        flags = flags - {"amx_bf16", "amx_tile"}
    if not any(level in cap for level in ("BF16", "FP16", "AMX", "AVX10")):
        flags = flags - {"avx512_bf16"}
    return flags


def cpu_key() -> str:
    """Identifies the CPU (model and flags), oneDNN's ISA cap, torch version and threads."""
    model, flags = cpu_facts()
    return (f"{model}|{','.join(sorted(flags or ()))}|{ISA_CAP}={os.environ.get(ISA_CAP, '')}"
            f"|torch {torch.__version__}|threads {torch.get_num_threads()}")


@dataclass(frozen=True)
class LayerShape:
    """The encoder layer a precision is measured on, and the batch it runs: MiniLM's by
    default (16 texts x 32 tokens, about an SST-5 sentence)."""
    hidden: int = 384
    heads: int = 12
    ffn: int = 1536
    batch: int = 16
    tokens: int = 32

    @classmethod
    def of(cls, config, batch: int) -> "LayerShape":
        """The shape of a Hugging Face model's layers (BERT-style config names; the
        default's where a config names them otherwise), at `batch` texts."""
        default = cls()
        hidden = getattr(config, "hidden_size", None) or default.hidden
        heads = getattr(config, "num_attention_heads", None) or default.heads
        ffn = getattr(config, "intermediate_size", None) or 4 * hidden
        if hidden % heads:
            hidden, heads = default.hidden, default.heads
        return cls(int(hidden), int(heads), int(ffn), max(1, int(batch)), default.tokens)

    def key(self) -> str:
        return f"layer {self.hidden}/{self.heads}/{self.ffn} x {self.batch}x{self.tokens}"


def layer_seconds(purpose: Purpose, repeats: int = 5, device: torch.device | None = None,
                  shape: LayerShape = LayerShape(), low: str = "bf16") -> dict[str, float]:
    """Best time per precision (fp32 and `low`: bf16 or fp16 autocast) of one encoder layer
    step of `shape` on `device` (the CPU by default). The two alternate, so a load that
    comes and goes hits both."""
    device = device or torch.device("cpu")
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(shape.hidden, shape.heads, shape.ffn,
                                             batch_first=True).to(device)
    layer.train(purpose == "train")
    x = torch.randn(shape.batch, shape.tokens, shape.hidden, device=device,
                    requires_grad=purpose == "train")
    dtype = torch.bfloat16 if low == "bf16" else torch.float16
    wait = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    best = {"fp32": float("inf"), low: float("inf")}
    for _ in range(repeats + 1):  # the first round warms caches and kernels up
        for precision in best:
            wait()
            start = time.perf_counter()
            with torch.set_grad_enabled(purpose == "train"), torch.autocast(
                    device.type, dtype=dtype, enabled=precision == low):
                out = layer(x)
            if purpose == "train":
                out.float().sum().backward()
            wait()
            best[precision] = min(best[precision], time.perf_counter() - start)
    return best


def choose_cpu_precision(purpose: Purpose,
                         measure: Callable[[Purpose], dict[str, float]] = layer_seconds,
                         cache: Path | None = None,
                         flags: frozenset[str] | None | str = "detect") -> str:
    """'bf16' if it is at least MIN_SPEEDUP x faster than fp32 for `purpose`, else 'fp32'.

    Two cases need no measurement (benchmarks/README.md): with AMX, bf16 matmuls run
    several times faster than fp32; without AVX512-BF16 or AMX, bf16 is emulated and slow.
    AVX512-BF16 alone, or a CPU whose flags are unknown, is measured. Detected flags count
    only where oneDNN may use them (`usable_flags`: ONEDNN_MAX_CPU_ISA).
    """
    flags = usable_flags(cpu_facts()[1]) if flags == "detect" else flags
    if flags is not None and "amx_bf16" in flags:
        return "bf16"
    if flags is not None and "avx512_bf16" not in flags:
        return "fp32"
    return _measured_choice(f"{cpu_key()}|{purpose}", lambda: measure(purpose), "bf16",
                            cache or cache_path())


def choose_gpu_precision(device: torch.device, purpose: Purpose,
                         shape: LayerShape = LayerShape(),
                         measure: Callable[..., dict[str, float]] = layer_seconds,
                         cache: Path | None = None) -> str:
    """bf16 (fp16 where the GPU lacks bf16) if it measures at least MIN_SPEEDUP x faster
    than fp32 on a layer of `shape` for `purpose`, else 'fp32'."""
    low = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    key = (f"{torch.cuda.get_device_name(device)}|torch {torch.__version__}|{shape.key()}"
           f"|{purpose}")
    return _measured_choice(key, lambda: measure(purpose, device=device, shape=shape, low=low),
                            low, cache or cache_path())


def int8_available() -> bool:
    """Whether ONNX Runtime and onnx (its quantizer needs it) can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def choose_labelling_precision(measure_int8: Callable[[], dict[str, float]],
                               measure_bf16: Callable[[Purpose], dict[str, float]] = layer_seconds,
                               cache: Path | None = None,
                               flags: frozenset[str] | None | str = "detect",
                               int8_installed: bool | None = None) -> str:
    """For labelling new texts (predict, serve): 'bf16' where it pays for inference
    (`choose_cpu_precision`), else 'int8' where ONNX Runtime is installed and measures at
    least MIN_SPEEDUP x fp32 here (`measure_int8`:
    textclf.model.engines.onnx_int8.int8_seconds), else
    'fp32'."""
    cache = cache or cache_path()
    if choose_cpu_precision("infer", measure_bf16, cache, flags) == "bf16":
        return "bf16"
    if not (int8_available() if int8_installed is None else int8_installed):
        return "fp32"
    engine = f"onnxruntime {_version('onnxruntime')}"
    return _measured_choice(f"{cpu_key()}|{engine}|label", measure_int8, "int8", cache)


def _measured_choice(key: str, measure: Callable[[], dict[str, float]], candidate: str,
                     cache: Path) -> str:
    """`candidate` if measure()'s seconds for it are at most fp32's / MIN_SPEEDUP, else
    'fp32'; the verdict cached in `cache` under `key`."""
    with exclusive(cache):  # parallel runs (queue workers) measure once and agree
        known = _read(cache)
        if isinstance(known.get(key), dict) and known[key].get("choice") in (candidate, "fp32"):
            return known[key]["choice"]
        seconds = measure()
        fp32, other = seconds["fp32"], seconds[candidate]
        choice = candidate if fp32 / other >= MIN_SPEEDUP else "fp32"
        known[key] = {"fp32_s": fp32, f"{candidate}_s": other, "choice": choice}
        try:
            scratch = cache.with_name(f".{cache.name}.{os.getpid()}")
            scratch.write_text(json.dumps(known, indent=1), encoding="utf-8")
            os.replace(scratch, cache)
        except OSError:
            pass  # a read-only home only costs the measurement next time
    return choice


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _read(cache: Path) -> dict:
    try:
        known = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def choose_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def choose_precision(device: torch.device, requested: str = "auto",
                     purpose: str = "infer", shape: LayerShape | None = None) -> str:
    """'fp32', 'bf16' or 'fp16': the fastest the device runs well, unless one is forced.
    On a CPU or a CUDA GPU that is measured (above), for training or inference, on a
    layer of `shape` (the model's: `LayerShape.of`; MiniLM's when None) on a GPU; predict
    and serve may also take int8 (textclf.model.engines.onnx_int8.labelling_precision)."""
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return choose_gpu_precision(device, "train" if purpose == "train" else "infer",
                                    shape or LayerShape())
    if device.type == "cpu":
        return choose_cpu_precision("train" if purpose == "train" else "infer")
    return "fp32"
