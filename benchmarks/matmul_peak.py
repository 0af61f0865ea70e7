"""The machine's matmul peak per precision: the ceiling every other figure is read against.

    python benchmarks/matmul_peak.py [--seconds 1]

Prints sustained GFLOP/s of square fp32 and bf16 matmuls (the shape of a MiniLM-sized
layer's work and a large one) with all threads and with one, and the bf16/fp32 ratio: above
1 where bf16 has hardware behind it (AMX), below 1 where it does not.

oneDNN's `ONEDNN_MAX_CPU_ISA` shows what a CPU without AMX gets, on an AMX machine:
`ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16` (AVX512-BF16, no AMX, like many laptops and cloud VMs)
or `AVX512_CORE` (no BF16 instructions).
"""

from __future__ import annotations

import argparse

import torch

from _common import machine, matmul_gflops

SHAPES = [(512, 384, 1536), (2048, 2048, 2048)]   # (tokens x hidden) @ MLP weight; large


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="per measurement")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    threads = torch.get_num_threads()
    print("| threads | m x k x n | fp32 GFLOP/s | bf16 GFLOP/s | bf16 / fp32 |")
    print("| --- | --- | --- | --- | --- |")
    for count in sorted({threads, 1}, reverse=True):
        torch.set_num_threads(count)
        for shape in SHAPES:
            fp32 = matmul_gflops(torch.float32, *shape, seconds=args.seconds)
            bf16 = matmul_gflops(torch.bfloat16, *shape, seconds=args.seconds)
            print(f"| {count} | {' x '.join(map(str, shape))} | {fp32:.0f} | {bf16:.0f} | "
                  f"{bf16 / fp32:.2f}x |")


if __name__ == "__main__":
    main()
