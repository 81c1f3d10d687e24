"""Intel AMX int8 tiles: the tensor intrinsic of the conv2d kernel on targets with ``amx-int8``.

An AMX tile register holds up to 16 rows of 64 bytes; ``tdpbusd`` multiplies a uint8 tile
``A`` (rows: output pixels, columns: ``4 kc`` input channels) by an int8 tile ``B`` (``kc``
rows of 16 output channels x 4 input channels: exactly the prepacked weight layout
``[..., C/4, T, 4]`` of :mod:`tvm_mpq.kernels.cpu_mac`) into an int32 tile ``C`` (rows:
the pixels, 16 output channels each): ``nx * 16 * 4 kc`` multiply-accumulates, 16 K of them
per instruction at the largest shapes, where a 512-bit ``vpdpbusd`` does 64.

:func:`amx_intrins` registers, per shape, the three intrinsics the kernel tensorizes with, for
``nx`` pixels, ``nf`` tiles of 16 output channels and ``4 kc`` input channels:

* **init** (the reduction's init block, once per output tile): loads the tile configuration
  (``ldtilecfg``: the shapes) and zeroes the ``nf`` accumulator tiles;
* **update** (``C[i, j] += A[i, k] * B[k / 4, j, k % 4]``, per tap and ``4 kc`` input
  channels): loads ``A`` once and each ``B`` tile and ``tdpbusd`` into the accumulator tiles;
* **store** (a block of its own after the reduction): the accumulator tiles to the kernel's
  per-tile accumulator buffer, which the epilogue reads like the vector kernels' accumulators.

The accumulators live in the tile registers from the init to the store (one thread runs a
whole tile, and no other code between them uses tiles); ``C`` of the init and the update
stands for them and is never read or written in memory. Configuring per call instead
serializes the tile unit: a 64 -> 64 3x3 conv @56 took 0.35 ms that way, 0.17 ms with a
store after every update and 0.15 ms with one store per tile, 0.25 ms with ``vpdpbusd``
(2 threads, with the layout transposes around it, 2026-12-03).

Linux hands AMX state to a process only on request (``arch_prctl(ARCH_REQ_XCOMP_PERM,
XFEATURE_XTILEDATA)``, process-wide); without it the first tile instruction dies with SIGILL.
:func:`request_amx` asks; :func:`tvm_mpq.runtime.executor.host_target` calls it before it
names AMX in a target and the kernel before it emits tiles, so every process that builds an AMX
kernel may run it (a process that only loads an exported library must ask itself; the RPC
server does).
"""

from __future__ import annotations

import ctypes
import functools
import platform

from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

from .cpu_intrin import REGISTER_SCOPE

TILE_ROWS = 16
TILE_ROW_BYTES = 64
TILE_LANES = 16
"""int32 output channels per accumulator tile row."""
MAX_TILES = 3
"""Accumulator (and weight) tiles per call: ``nf`` C + ``nf`` B + one A <= the 8 tile registers."""
A_TILE = 3
B_TILE0 = 4

LOAD, DOT, STORE, ZERO = "llvm.x86.tileloadd64", "llvm.x86.tdpbusd", "llvm.x86.tilestored64", "llvm.x86.tilezero"

_ARCH_REQ_XCOMP_PERM = 0x1023
_XFEATURE_XTILEDATA = 18
_SYS_ARCH_PRCTL = 158


@functools.cache
def request_amx() -> bool:
    """Ask Linux for this process's AMX tile state (once); whether it was granted."""
    if platform.system() != "Linux" or platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syscall(_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA) == 0
    except (OSError, AttributeError):
        return False


def amx_intrins(nx: int, nf: int, kc: int) -> tuple[str, str, str]:
    """The registered ``(init, update, store)`` intrinsics (registered on first use) for ``nx``
    pixels (<= 16), ``nf`` accumulator tiles of 16 channels (<= :data:`MAX_TILES`) and
    ``4 kc`` input channels (kc <= 16)."""
    if not (1 <= nx <= TILE_ROWS and 1 <= nf <= MAX_TILES and 1 <= kc <= TILE_ROWS):
        raise ValueError(f"no AMX tile shape for {nx} pixels x {nf} x 16 channels x {4 * kc} inputs")
    return _register(nx, nf, kc)


@functools.cache
def _register(nx: int, nf: int, kc: int) -> tuple[str, str, str]:
    shape = f"{nx}x{nf * TILE_LANES}x{4 * kc}"
    init, update, store = f"tvm_mpq_amx_init_{shape}", f"tvm_mpq_amx_{shape}", f"tvm_mpq_amx_store_{shape}"
    TensorIntrin.register(init, _init_desc(nx, nf), _init_impl(nx, nf, kc), override=True)
    TensorIntrin.register(update, _desc(nx, nf, kc), _impl(nx, nf, kc), override=True)
    TensorIntrin.register(store, _store_desc(nx, nf), _store_impl(nx, nf), override=True)
    return init, update, store


def tile_config(nx: int, nf: int, kc: int) -> list[int]:
    """The 64-byte ``ldtilecfg`` operand as 8 little-endian 64-bit words: palette 1; per tile
    its bytes per row (``colsb``, 16-bit, bytes 16-31) and rows (8-bit, bytes 48-55)."""
    cfg = bytearray(64)
    cfg[0] = 1
    shapes = {t: (nx, TILE_ROW_BYTES) for t in range(nf)}  # accumulators
    shapes[A_TILE] = (nx, 4 * kc)
    shapes.update({B_TILE0 + t: (kc, TILE_ROW_BYTES) for t in range(nf)})
    for tile, (rows, colsb) in shapes.items():
        cfg[16 + 2 * tile: 18 + 2 * tile] = colsb.to_bytes(2, "little")
        cfg[48 + tile] = rows
    return [int.from_bytes(cfg[8 * i: 8 * i + 8], "little") for i in range(8)]


def _init_desc(nx: int, nf: int):
    n = nf * TILE_LANES

    @T.prim_func(s_tir=True)
    def desc(c: T.handle) -> None:
        sc = T.int32()
        C = T.match_buffer(c, (nx, n), "int32", strides=[sc, 1], offset_factor=1, scope=REGISTER_SCOPE)
        with T.sblock("root"):
            T.reads()
            T.writes(C[0:nx, 0:n])
            for i, j in T.grid(nx, n):
                with T.sblock("init"):
                    vi, vj = T.axis.remap("SS", [i, j])
                    C[vi, vj] = 0

    return desc


def _init_impl(nx: int, nf: int, kc: int):
    """The tile shapes, and zero accumulator tiles (the buffer is written by the first update)."""
    n = nf * TILE_LANES
    w0, _, w2, w3, _, _, w6, _ = tile_config(nx, nf, kc)
    i8 = T.int8

    @T.prim_func(s_tir=True)
    def impl(c: T.handle) -> None:
        sc = T.int32()
        C = T.match_buffer(c, (nx, n), "int32", strides=[sc, 1], offset_factor=1, scope=REGISTER_SCOPE)
        with T.sblock("root"):
            T.reads()
            T.writes(C[0:nx, 0:n])
            cfg = T.alloc_buffer((8,), "uint64", scope=REGISTER_SCOPE)
            cfg[0] = T.uint64(w0)
            cfg[1] = T.uint64(0)
            cfg[2] = T.uint64(w2)
            cfg[3] = T.uint64(w3)
            cfg[4] = T.uint64(0)
            cfg[5] = T.uint64(0)
            cfg[6] = T.uint64(w6)
            cfg[7] = T.uint64(0)
            T.evaluate(T.call_llvm_intrin("void", "llvm.x86.ldtilecfg", cfg.access_ptr("r")))
            # (tile numbers are immediates: one statement per tile, the absent ones dropped at parse time)
            T.evaluate(T.call_llvm_intrin("void", ZERO, i8(0)))
            if nf >= 2:
                T.evaluate(T.call_llvm_intrin("void", ZERO, i8(1)))
            if nf >= 3:
                T.evaluate(T.call_llvm_intrin("void", ZERO, i8(2)))

    return impl


def _store_desc(nx: int, nf: int):
    n = nf * TILE_LANES

    @T.prim_func(s_tir=True)
    def desc(c: T.handle, d: T.handle) -> None:
        sc, sd = T.int32(), T.int32()
        C = T.match_buffer(c, (nx, n), "int32", strides=[sc, 1], offset_factor=1, scope=REGISTER_SCOPE)
        D = T.match_buffer(d, (nx, n), "int32", strides=[sd, 1], offset_factor=1, scope=REGISTER_SCOPE)
        with T.sblock("root"):
            T.reads(C[0:nx, 0:n])
            T.writes(D[0:nx, 0:n])
            for i, j in T.grid(nx, n):
                with T.sblock("store"):
                    vi, vj = T.axis.remap("SS", [i, j])
                    D[vi, vj] = C[vi, vj]

    return desc


def _store_impl(nx: int, nf: int):
    """The accumulator tiles (``C``: held in the tile registers) to the accumulator buffer ``D``."""
    n = nf * TILE_LANES
    i8, i64 = T.int8, T.int64

    @T.prim_func(s_tir=True)
    def impl(c: T.handle, d: T.handle) -> None:
        sc, sd = T.int32(), T.int32()
        C = T.match_buffer(c, (nx, n), "int32", strides=[sc, 1], offset_factor=1, scope=REGISTER_SCOPE)
        D = T.match_buffer(d, (nx, n), "int32", strides=[sd, 1], offset_factor=1, scope=REGISTER_SCOPE)
        with T.sblock("root"):
            T.reads(C[0:nx, 0:n])
            T.writes(D[0:nx, 0:n])
            T.evaluate(T.call_llvm_intrin("void", STORE, i8(0), D.access_ptr("w"), i64(sd * 4)))
            if nf >= 2:
                T.evaluate(T.call_llvm_intrin("void", STORE, i8(1), D.access_ptr("w", offset=16), i64(sd * 4)))
            if nf >= 3:
                T.evaluate(T.call_llvm_intrin("void", STORE, i8(2), D.access_ptr("w", offset=32), i64(sd * 4)))

    return impl


def _desc(nx: int, nf: int, kc: int):
    n, k = nf * TILE_LANES, 4 * kc

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        sa, sb, sc = T.int32(), T.int32(), T.int32()
        A = T.match_buffer(a, (nx, k), "uint8", strides=[sa, 1], offset_factor=1)
        B = T.match_buffer(b, (kc, n, 4), "int8", strides=[sb, 4, 1], offset_factor=1)
        C = T.match_buffer(c, (nx, n), "int32", strides=[sc, 1], offset_factor=1, scope=REGISTER_SCOPE)
        with T.sblock("root"):
            T.reads(C[0:nx, 0:n], A[0:nx, 0:k], B[0:kc, 0:n, 0:4])
            T.writes(C[0:nx, 0:n])
            for i, j, r in T.grid(nx, n, k):
                with T.sblock("update"):
                    vi, vj, vr = T.axis.remap("SSR", [i, j, r])
                    C[vi, vj] = C[vi, vj] + T.Cast("int32", A[vi, vr]) * T.Cast("int32", B[vr // 4, vj, vr % 4])

    return desc


def _impl(nx: int, nf: int, kc: int):
    n, k = nf * TILE_LANES, 4 * kc
    i8, i64 = T.int8, T.int64

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        sa, sb, sc = T.int32(), T.int32(), T.int32()
        A = T.match_buffer(a, (nx, k), "uint8", strides=[sa, 1], offset_factor=1)
        B = T.match_buffer(b, (kc, n, 4), "int8", strides=[sb, 4, 1], offset_factor=1)
        C = T.match_buffer(c, (nx, n), "int32", strides=[sc, 1], offset_factor=1, scope=REGISTER_SCOPE)
        with T.sblock("root"):
            T.reads(C[0:nx, 0:n], A[0:nx, 0:k], B[0:kc, 0:n, 0:4])
            T.writes(C[0:nx, 0:n])
            T.evaluate(T.call_llvm_intrin("void", LOAD, i8(A_TILE), A.access_ptr("r"), i64(sa)))
            T.evaluate(T.call_llvm_intrin("void", LOAD, i8(B_TILE0), B.access_ptr("r"), i64(sb)))
            T.evaluate(T.call_llvm_intrin("void", DOT, i8(0), i8(A_TILE), i8(B_TILE0)))
            if nf >= 2:
                T.evaluate(T.call_llvm_intrin("void", LOAD, i8(B_TILE0 + 1), B.access_ptr("r", offset=64), i64(sb)))
                T.evaluate(T.call_llvm_intrin("void", DOT, i8(1), i8(A_TILE), i8(B_TILE0 + 1)))
            if nf >= 3:
                T.evaluate(T.call_llvm_intrin("void", LOAD, i8(B_TILE0 + 2), B.access_ptr("r", offset=128), i64(sb)))
                T.evaluate(T.call_llvm_intrin("void", DOT, i8(2), i8(A_TILE), i8(B_TILE0 + 2)))

    return impl
