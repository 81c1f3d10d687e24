"""What a CPU target offers the kernels: vector width, register count, int8 dot product.

Every CPU kernel of :mod:`tvm_mpq.kernels` takes its widths from :func:`cpu_isa` instead of
naming an instruction set: an AVX-512 target gets 16 fp32 lanes and 32 registers, an AVX2 one 8
lanes and 16 registers, plain x86-64 (SSE2) and aarch64 (NEON) 4 lanes (16 and 32 registers).
The int8 dot product is the widest exact ``uint8 x int8 -> int32`` instruction of the target:

* ``vnni``: ``vpdpbusd`` (AVX512-VNNI with AVX512VL, or AVX-VNNI), 4 byte pairs per int32 lane,
  at 512 bits only with AVX512-VNNI (AVX-VNNI has 128/256);
* ``pmaddwd``: ``vpmaddwd`` on int16-widened operands, 2 pairs per lane (any x86-64; exact,
  unlike the saturating ``vpmaddubsw``);
* ``sdot``: aarch64 ``+dotprod``, int8 x int8, 4 pairs per lane: the graph shifts uint8
  activations to int8 first (:class:`relay_passes.shift_activations.ShiftActivationsToInt8`).

``llvm_get_vector_width`` is not used: TVM 0.27 answers 512 for AVX2-only CPUs.

:func:`with_llvm_tuning` adds the LLVM tuning switches the kernels want to an x86 target dict:
``+fast-dpwssd`` where the target has VNNI (see :data:`FUSED_DPWSSD`).
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm.target import Target, codegen

from .cpu_amx import AMX_FEATURES


@dataclass(frozen=True)
class CpuIsa:
    """``vector_bits``: widest vector; ``registers``: vector registers; ``dot``: the int8 dot
    product kind (``vnni``, ``pmaddwd`` or ``None``); ``dot_bits``: its widest vector."""

    name: str
    vector_bits: int
    registers: int
    dot: str | None
    dot_bits: int
    amx: bool = False
    """Intel AMX int8 tiles (``amx-tile`` + ``amx-int8``): the conv2d and matmul kernels' multiply
    on tiles (:mod:`tvm_mpq.kernels.cpu_amx`)."""

    def lanes(self, dtype_bits: int = 32) -> int:
        """Lanes of the widest vector for ``dtype_bits``-bit elements."""
        return self.vector_bits // dtype_bits

    @property
    def dot_group(self) -> int:
        """Byte pairs one int32 lane of the dot product sums (4: vpdpbusd, sdot; 2: vpmaddwd)."""
        return 4 if self.dot in ("vnni", "sdot") else 2

    def channel_lanes(self, channels: int, dot: bool = False) -> int | None:
        """The widest int32/fp32 lane count (<= the vector) that divides ``channels`` (a layer's
        output channels), never below 4; ``None`` when even 4 does not divide."""
        return widest_lanes(channels, (self.dot_bits if dot else self.vector_bits) // 32)


def widest_lanes(channels: int, lanes: int) -> int | None:
    """The widest of ``lanes``, ``lanes / 2``, ... (never below 4) that divides ``channels``;
    ``None`` when even 4 does not."""
    while lanes >= 4:
        if channels % lanes == 0:
            return lanes
        lanes //= 2
    return None


def _has(target: Target, *features: str) -> bool:
    return all(codegen.target_has_features(f, target) for f in features)


def is_aarch64(target: Target) -> bool:
    triple = str(target.attrs.get("mtriple", "") or "")
    if not triple:
        triple = str(tvm.get_global_func("target.llvm_get_system_triple")())
    return triple.startswith(("aarch64", "arm64"))


def has_fma(target: Target) -> bool:
    """Whether ``target`` is an LLVM CPU target with fused multiply-add instructions (every
    aarch64; x86 with ``fma``)."""
    return str(target.kind.name) == "llvm" and (is_aarch64(target) or _has(target, "fma"))


FUSED_DPWSSD = "fast-dpwssd"
"""LLVM's x86 tuning switch under which a ``vpmaddwd`` and the ``vpaddd`` that adds its result to
an accumulator are emitted as one ``vpdpwssd`` (VNNI's 16-bit multiply-accumulate). LLVM's Intel
CPU models (``sapphirerapids``, ``emeraldrapids``, ``icelake-server``) leave it off and even split an
explicit ``vpdpwssd`` back into the two, trading throughput for the accumulator chain's latency. The
int8 depthwise conv (:class:`tvm_mpq.kernels.cpu_mac.DepthwiseChannelsLast`: no dot product over
one input channel, so each tap is a widening multiply-add, which LLVM writes as ``vpmaddwd`` on
the zero-extended codes) keeps one accumulator per register and is bound by the multiply
port, which both instructions use once per 16 lanes: fused, the ``vpaddd`` leaves the other port
to the widening loads. Measured on an AVX-512 VNNI Xeon (2026-12-07, ``python
benchmarks/fused_dpwssd.py``): the depthwise kernels of efficientnet-lite0 / mobilenetv2 /
ppocrv6-det-tiny fully int8 at 0.83 / 0.83 / 0.80 of their time split, the whole models 0.94 /
0.99 / 0.98, the outputs identical. (LLVM's ``alderlake``, AVX-VNNI, fuses them already.)"""

def with_llvm_tuning(target: dict) -> dict:
    """The ``llvm`` target dict ``target`` with ``+``:data:`FUSED_DPWSSD` added to its ``mattr``
    where its int8 dot product is VNNI's (:func:`cpu_isa`) and its ``mattr`` does not name the
    switch already (``-fast-dpwssd`` keeps LLVM's choice); any other target as it is."""
    mattr = [str(f) for f in target.get("mattr", [])]
    if target.get("kind") != "llvm" or any(f.lstrip("+-") == FUSED_DPWSSD for f in mattr):
        return target
    if cpu_isa(Target(target)).dot != "vnni":
        return target
    return {**target, "mattr": [*mattr, f"+{FUSED_DPWSSD}"]}


def cpu_isa(target: Target) -> CpuIsa:
    """The :class:`CpuIsa` of an ``llvm`` target (its ``-mcpu``/``-mattr`` features)."""
    if is_aarch64(target):
        if _has(target, "dotprod"):
            return CpuIsa("neon-dotprod", 128, 32, "sdot", 128)
        return CpuIsa("neon", 128, 32, None, 128)
    if _has(target, "avx512f"):
        if _has(target, "avx512vnni", "avx512vl"):
            if _has(target, *AMX_FEATURES):
                return CpuIsa("avx512-vnni-amx", 512, 32, "vnni", 512, amx=True)
            return CpuIsa("avx512-vnni", 512, 32, "vnni", 512)
        if _has(target, "avx512bw"):
            return CpuIsa("avx512", 512, 32, "pmaddwd", 512)
        return CpuIsa("avx512", 512, 32, "pmaddwd", 256)
    if _has(target, "avxvnni"):
        return CpuIsa("avx2-vnni", 256, 16, "vnni", 256)
    if _has(target, "avx2"):
        return CpuIsa("avx2", 256, 16, "pmaddwd", 256)
    return CpuIsa("sse2", 128, 16, "pmaddwd", 128)
