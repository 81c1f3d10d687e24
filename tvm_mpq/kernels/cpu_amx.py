"""Intel AMX int8 tiles: the tensor intrinsics of the conv2d and matmul kernel on targets with ``amx-int8``.

An AMX tile register holds up to 16 rows of 64 bytes; ``tdpbusd`` multiplies a uint8 tile
``A`` (rows: output pixels, columns: ``4 kc`` input channels) by an int8 tile ``B`` (``kc``
rows of 16 output channels x 4 input channels: exactly the prepacked weight layout
``[..., C/4, T, 4]`` of :mod:`tvm_mpq.kernels.cpu_mac`) into an int32 tile ``C`` (rows:
the pixels, 16 output channels each): ``nx * 16 * 4 kc`` multiply-accumulates, 16 K of them
per instruction at the largest shapes, where a 512-bit ``vpdpbusd`` does 64.

:func:`amx_intrins` registers, per shape, the three intrinsics the kernel tensorizes with, for
``mx`` blocks of ``nx`` pixels (one A tile each), ``nf`` tiles of 16 output channels (one B tile
each, loaded once for all ``mx`` A tiles) and ``4 kc`` input channels:

* **init** (the reduction's init block, once per output tile): loads the tile configuration
  (``ldtilecfg``: the shapes) and zeroes the ``mx * nf`` accumulator tiles;
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

Tile configuration is per thread and outlives the code that loads it, and other libraries in
the same process rely on theirs: onnxruntime 1.32's int8 GEMM (MLAS) configures a thread's tiles
once and on later calls reloads them only where both the column widths and the row counts it
reads back (``sttilecfg``) differ from its own: a kernel of ours with all eight tiles 64 bytes
wide but 14 rows long, run on the calling thread between two onnxruntime calls, made
onnxruntime's next ``tdpbusd`` fault (SIGILL; found when the corpus benchmark timed both in one
process, 2026-12-03). :class:`KeepCallerTileConfig` therefore wraps every kernel that
uses tiles in ``sttilecfg`` / ``ldtilecfg`` of the configuration it found on the calling thread
(TVM's thread pool runs the first parallel task on the caller; its own worker threads run only
TVM kernels, each of which configures the tiles it uses).

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

import tvm
from tvm import s_tir, tirx
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

from .cpu_intrin import REGISTER_SCOPE
from .root_block import root_annotation, with_root_block

TILE_ROWS = 16
TILE_ROW_BYTES = 64
TILE_LANES = 16
"""int32 output channels per accumulator tile row."""
MAX_TILES = 3
"""Tiles of 16 output channels per call (with one A tile: 3 B + 3 accumulators + A = 7)."""
TILE_REGISTERS = 8

LOAD, DOT, STORE, ZERO = "llvm.x86.tileloadd64", "llvm.x86.tdpbusd", "llvm.x86.tilestored64", "llvm.x86.tilezero"
CONFIGURE, READ_CONFIG = "llvm.x86.ldtilecfg", "llvm.x86.sttilecfg"

AMX_FEATURES = ("amx-tile", "amx-int8")
"""LLVM's names of the AMX int8 tile extensions (Linux: ``amx_tile``, ``amx_int8``)."""
ARCH_PRCTL_AMX = (158, 0x1023, 18)
"""``syscall`` arguments that ask for AMX tile state: ``SYS_arch_prctl``,
``ARCH_REQ_XCOMP_PERM``, ``XFEATURE_XTILEDATA``."""


@functools.cache
def request_amx() -> bool:
    """Ask Linux for this process's AMX tile state (once); whether it was granted."""
    if platform.system() != "Linux" or platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syscall(*ARCH_PRCTL_AMX) == 0
    except (OSError, AttributeError):
        return False


def tiles_fit(mx: int, nf: int) -> bool:
    """Whether ``mx`` A tiles, ``nf`` B tiles and their ``mx * nf`` accumulators fit the 8 tile registers."""
    return mx * nf + mx + nf <= TILE_REGISTERS


def amx_intrins(nx: int, nf: int, kc: int, mx: int = 1) -> tuple[str, str, str]:
    """The registered ``(init, update, store)`` intrinsics (registered on first use) for ``mx``
    blocks of ``nx`` pixels (<= 16 each), ``nf`` tiles of 16 output channels and ``4 kc`` input
    channels (kc <= 16)."""
    if not (1 <= nx <= TILE_ROWS and 1 <= kc <= TILE_ROWS and tiles_fit(mx, nf)):
        raise ValueError(f"no AMX tile shape for {mx} x {nx} pixels x {nf} x 16 channels x {4 * kc} inputs")
    return _register(nx, nf, kc, mx)


@functools.cache
def _register(nx: int, nf: int, kc: int, mx: int) -> tuple[str, str, str]:
    shape = f"{mx}x{nx}x{nf * TILE_LANES}x{4 * kc}"
    names = (f"tvm_mpq_amx_init_{shape}", f"tvm_mpq_amx_{shape}", f"tvm_mpq_amx_store_{shape}")
    TensorIntrin.register(names[0], _init_desc(mx * nx, nf), _init_impl(nx, nf, kc, mx), override=True)
    TensorIntrin.register(names[1], _update_desc(mx * nx, nf, kc), _update_impl(nx, nf, kc, mx), override=True)
    TensorIntrin.register(names[2], _store_desc(mx * nx, nf), _store_impl(nx, nf, mx), override=True)
    return names


def _tiles(nf: int, mx: int) -> tuple[int, int]:
    """The first A tile and the first B tile (the accumulators are tiles ``m * nf + f``)."""
    return mx * nf, mx * nf + mx


def tile_config(nx: int, nf: int, kc: int, mx: int = 1) -> list[int]:
    """The 64-byte ``ldtilecfg`` operand as 8 little-endian 64-bit words: palette 1; per tile
    its bytes per row (``colsb``, 16-bit, bytes 16-31) and rows (8-bit, bytes 48-55)."""
    a0, b0 = _tiles(nf, mx)
    shapes = {t: (nx, TILE_ROW_BYTES) for t in range(mx * nf)}  # accumulators
    shapes.update({a0 + m: (nx, 4 * kc) for m in range(mx)})
    shapes.update({b0 + f: (kc, TILE_ROW_BYTES) for f in range(nf)})
    cfg = bytearray(64)
    cfg[0] = 1
    for tile, (rows, colsb) in shapes.items():
        cfg[16 + 2 * tile: 18 + 2 * tile] = colsb.to_bytes(2, "little")
        cfg[48 + tile] = rows
    return [int.from_bytes(cfg[8 * i: 8 * i + 8], "little") for i in range(8)]


# Each intrinsic's buffers: A (rows x 4 kc uint8, rows of pixels), B (kc x n x 4 int8: the
# prepacked weight), C / D (rows x n int32: the accumulators; C of the init and the update
# stands for the tile registers and is never read or written in memory). Tile numbers are
# immediates: the tile loops are unrolled (LLVM folds each number to a constant).
def _init_desc(rows: int, nf: int):
    n = nf * TILE_LANES

    @T.prim_func(s_tir=True)
    def desc(c: T.handle) -> None:
        sc = T.int32()
        C = T.match_buffer(c, (rows, n), "int32", strides=[sc, 1], offset_factor=1, scope=REGISTER_SCOPE)
        with T.sblock("root"):
            T.reads()
            T.writes(C[0:rows, 0:n])
            for i, j in T.grid(rows, n):
                with T.sblock("init"):
                    vi, vj = T.axis.remap("SS", [i, j])
                    C[vi, vj] = 0

    return desc


def _init_impl(nx: int, nf: int, kc: int, mx: int):
    """The tile shapes, and zeroed accumulator tiles."""
    rows, n = mx * nx, nf * TILE_LANES
    w0, _, w2, w3, _, _, w6, _ = tile_config(nx, nf, kc, mx)

    @T.prim_func(s_tir=True)
    def impl(c: T.handle) -> None:
        sc = T.int32()
        C = T.match_buffer(c, (rows, n), "int32", strides=[sc, 1], offset_factor=1, scope=REGISTER_SCOPE)
        with T.sblock("root"):
            T.reads()
            T.writes(C[0:rows, 0:n])
            cfg = T.alloc_buffer((8,), "uint64", scope=REGISTER_SCOPE)
            cfg[0] = T.uint64(w0)
            cfg[1] = T.uint64(0)
            cfg[2] = T.uint64(w2)
            cfg[3] = T.uint64(w3)
            cfg[4] = T.uint64(0)
            cfg[5] = T.uint64(0)
            cfg[6] = T.uint64(w6)
            cfg[7] = T.uint64(0)
            T.evaluate(T.call_llvm_intrin("void", CONFIGURE, cfg.access_ptr("r")))
            for t in T.unroll(mx * nf):
                T.evaluate(T.call_llvm_intrin("void", ZERO, T.Cast("int8", t)))

    return impl


def _update_desc(rows: int, nf: int, kc: int):
    n, k = nf * TILE_LANES, 4 * kc

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        sa, sb, sc = T.int32(), T.int32(), T.int32()
        A = T.match_buffer(a, (rows, k), "uint8", strides=[sa, 1], offset_factor=1)
        B = T.match_buffer(b, (kc, n, 4), "int8", strides=[sb, 4, 1], offset_factor=1)
        C = T.match_buffer(c, (rows, n), "int32", strides=[sc, 1], offset_factor=1, scope=REGISTER_SCOPE)
        with T.sblock("root"):
            T.reads(C[0:rows, 0:n], A[0:rows, 0:k], B[0:kc, 0:n, 0:4])
            T.writes(C[0:rows, 0:n])
            for i, j, r in T.grid(rows, n, k):
                with T.sblock("update"):
                    vi, vj, vr = T.axis.remap("SSR", [i, j, r])
                    C[vi, vj] = C[vi, vj] + T.Cast("int32", A[vi, vr]) * T.Cast("int32", B[vr // 4, vj, vr % 4])

    return desc


def _update_impl(nx: int, nf: int, kc: int, mx: int):
    """Each A tile (``nx`` rows of pixels) and each B tile loaded once, ``mx * nf`` multiplies."""
    rows, n, k = mx * nx, nf * TILE_LANES, 4 * kc
    a0, b0 = _tiles(nf, mx)

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        sa, sb, sc = T.int32(), T.int32(), T.int32()
        A = T.match_buffer(a, (rows, k), "uint8", strides=[sa, 1], offset_factor=1)
        B = T.match_buffer(b, (kc, n, 4), "int8", strides=[sb, 4, 1], offset_factor=1)
        C = T.match_buffer(c, (rows, n), "int32", strides=[sc, 1], offset_factor=1, scope=REGISTER_SCOPE)
        with T.sblock("root"):
            T.reads(C[0:rows, 0:n], A[0:rows, 0:k], B[0:kc, 0:n, 0:4])
            T.writes(C[0:rows, 0:n])
            for m in T.unroll(mx):
                T.evaluate(T.call_llvm_intrin("void", LOAD, T.Cast("int8", a0 + m),
                                              A.access_ptr("r", offset=m * nx * sa), T.Cast("int64", sa)))
            for f in T.unroll(nf):
                T.evaluate(T.call_llvm_intrin("void", LOAD, T.Cast("int8", b0 + f),
                                              B.access_ptr("r", offset=f * TILE_LANES * 4), T.Cast("int64", sb)))
                for m in T.unroll(mx):
                    T.evaluate(T.call_llvm_intrin("void", DOT, T.Cast("int8", m * nf + f), T.Cast("int8", a0 + m),
                                                  T.Cast("int8", b0 + f)))

    return impl


def _store_desc(rows: int, nf: int):
    n = nf * TILE_LANES

    @T.prim_func(s_tir=True)
    def desc(c: T.handle, d: T.handle) -> None:
        sc, sd = T.int32(), T.int32()
        C = T.match_buffer(c, (rows, n), "int32", strides=[sc, 1], offset_factor=1, scope=REGISTER_SCOPE)
        D = T.match_buffer(d, (rows, n), "int32", strides=[sd, 1], offset_factor=1, scope=REGISTER_SCOPE)
        with T.sblock("root"):
            T.reads(C[0:rows, 0:n])
            T.writes(D[0:rows, 0:n])
            for i, j in T.grid(rows, n):
                with T.sblock("store"):
                    vi, vj = T.axis.remap("SS", [i, j])
                    D[vi, vj] = C[vi, vj]

    return desc


def _store_impl(nx: int, nf: int, mx: int):
    """The accumulator tiles to the accumulator buffer ``D``."""
    rows, n = mx * nx, nf * TILE_LANES

    @T.prim_func(s_tir=True)
    def impl(c: T.handle, d: T.handle) -> None:
        sc, sd = T.int32(), T.int32()
        C = T.match_buffer(c, (rows, n), "int32", strides=[sc, 1], offset_factor=1, scope=REGISTER_SCOPE)
        D = T.match_buffer(d, (rows, n), "int32", strides=[sd, 1], offset_factor=1, scope=REGISTER_SCOPE)
        with T.sblock("root"):
            T.reads(C[0:rows, 0:n])
            T.writes(D[0:rows, 0:n])
            for m in T.unroll(mx):
                for f in T.unroll(nf):
                    T.evaluate(T.call_llvm_intrin("void", STORE, T.Cast("int8", m * nf + f),
                                                  D.access_ptr("w", offset=m * nx * sd + f * TILE_LANES),
                                                  T.Cast("int64", sd * 4)))

    return impl


# ------------------------------------------------------------------------------ the caller's tile configuration
TILES_ATTR = "tvm_mpq.amx_tiles"
"""Root-block annotation of a kernel that configures AMX tiles (set by its schedule)."""


def mark_tiles(sch: s_tir.Schedule) -> None:
    """Mark the scheduled PrimFunc as one that configures tiles (:func:`uses_tiles`)."""
    sch.annotate(sch.get_sblock("root"), TILES_ATTR, 1)


def uses_tiles(func: tirx.PrimFunc) -> bool:
    """Whether ``func``'s schedule configures AMX tiles (:func:`mark_tiles`)."""
    return root_annotation(func, TILES_ATTR) is not None


def keep_caller_tile_config(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """``func`` with its root block's body between ``sttilecfg`` (the calling thread's tile
    configuration, into a 64-byte stack buffer) and ``ldtilecfg`` of that buffer: the caller's
    tiles configured as they were (an unconfigured thread's all-zero configuration puts its tiles
    back in their initial state, as ``tilerelease``)."""
    root = func.body.block
    saved = tirx.decl_buffer((8,), "uint64", name="caller_tile_config", scope=REGISTER_SCOPE)
    body = tirx.SeqStmt([tirx.Evaluate(tirx.call_llvm_intrin("void", READ_CONFIG, saved.access_ptr("w"))),
                         root.body,
                         tirx.Evaluate(tirx.call_llvm_intrin("void", CONFIGURE, saved.access_ptr("r")))])
    return with_root_block(func, body=body, alloc_buffers=[*root.alloc_buffers, saved])


@tvm.transform.module_pass(opt_level=0, name="KeepCallerTileConfig")
class KeepCallerTileConfig:
    """:func:`keep_caller_tile_config` on every PrimFunc that :func:`uses_tiles` (module-level
    docstring: another library's tile configuration on the calling thread survives our kernels)."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        changed = {gv: keep_caller_tile_config(f) for gv, f in mod.functions.items()
                   if isinstance(f, tirx.PrimFunc) and uses_tiles(f)}
        if not changed:
            return mod
        out = mod.clone()
        for gv, func in changed.items():
            out.update_func(gv, func)
        return out
