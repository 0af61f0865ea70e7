"""The machine line every benchmark prints: the CPU kind its figures hold for."""

from __future__ import annotations

import sys

import pytest

from harness import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from _common import cpu_kind  # noqa: E402


@pytest.mark.parametrize("flags, kind", [
    (None, "unknown (no CPU flags readable)"),
    ({"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile"}, "AMX"),
    ({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}, "AVX-512 with BF16, no AMX"),
    ({"avx2", "avx512f", "avx512_vnni"}, "AVX-512 with VNNI, no BF16"),
    ({"avx2", "avx512f"}, "AVX-512, no VNNI, no BF16"),
    ({"avx2", "avx_vnni"}, "AVX2 with AVX-VNNI, no AVX-512"),
    ({"avx2", "fma"}, "AVX2 only"),
    ({"sse4_2"}, "no AVX2"),
])
def test_cpu_kind_names_the_kinds_the_figures_are_stated_for(flags, kind):
    assert cpu_kind(None if flags is None else frozenset(flags)) == kind
