"""Register tiles as stack allocations, whatever TVM's workspace limit.

A kernel's per-tile register buffers (accumulators, a transform's half result) are
:data:`~tvm_mpq.kernels.cpu_intrin.REGISTER_SCOPE` allocations of a few vectors. TVM 0.27's
``LowerTVMBuiltin`` keeps a constant-size CPU allocation on the stack only under
``runtime::kMaxStackAlloca`` (1 KiB); a larger one becomes a ``TVMBackendAllocWorkspace`` /
``FreeWorkspace`` pair around every tile, memory LLVM may or may not keep in registers across the
reduction (an AVX-512 4 x 5 tile of 16-lane vectors is 1280 bytes). :func:`StackRegisterTiles`
marks such allocations, up to :data:`STACK_ALLOCATION_BYTES`, with TVM's own
``disable_lower_builtin`` annotation, so ``LowerTVMBuiltin`` leaves them to the LLVM code
generator, which makes them an ``alloca`` at the entry of the (parallel) function that SROA
promotes to registers. ``REGISTER_SCOPE`` is TVM's ``global``: any other constant-size buffer up
to that size a kernel allocates (a row of a row chain) becomes an ``alloca`` too, as TVM makes
those under 1 KiB. :func:`register_cpu_pipeline` registers TVM's default TIR pipeline with the
pass run first in the host finalization (the TIR pipeline named :data:`CPU_TIR_PIPELINE`, which
:func:`tvm_mpq.target_build.passes.codegen` builds ``llvm`` targets with).
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import tirx

from .cpu_intrin import REGISTER_SCOPE

STACK_ALLOCATION_BYTES = 4096
"""The largest constant-size ``REGISTER_SCOPE`` allocation kept on the stack: the register file of
an AVX-512 core (32 x 64 bytes) twice over; anything larger is not a register tile and keeps
TVM's workspace allocation."""
DISABLE_LOWER_BUILTIN = "disable_lower_builtin"
"""TVM's ``tirx::transform::kDisableLowerTVMBuiltin``: ``LowerTVMBuiltin`` leaves the allocation."""
CPU_TIR_PIPELINE = "tvm_mpq_cpu"


def allocation_bytes(buffer: tirx.Buffer) -> int | None:
    """The size of ``buffer`` in bytes when its shape is constant, else None."""
    elements = 1
    for extent in buffer.shape:
        if not isinstance(extent, tvm.tirx.IntImm):
            return None
        elements *= int(extent.value)
    dtype = tvm.runtime.DataType(str(buffer.dtype))
    return elements * dtype.bits * dtype.lanes // 8


def _is_register_tile(buffer: tirx.Buffer, max_bytes: int) -> bool:
    size = allocation_bytes(buffer)
    return buffer.scope() == REGISTER_SCOPE and size is not None and 0 < size <= max_bytes


def StackRegisterTiles(max_bytes: int | None = None) -> tvm.transform.Pass:  # noqa: N802 (a TVM pass)
    """A PrimFunc pass: every constant-size ``REGISTER_SCOPE`` allocation of at most ``max_bytes``
    (default :data:`STACK_ALLOCATION_BYTES`, read when the pass is made; 0: none) annotated
    ``disable_lower_builtin`` (a stack ``alloca``; see the module's docstring). Run it before
    ``LowerTVMBuiltin``, on host (CPU) functions."""
    max_bytes = STACK_ALLOCATION_BYTES if max_bytes is None else max_bytes

    def annotate(stmt: tirx.AllocBuffer) -> tirx.AllocBuffer:
        if not _is_register_tile(stmt.buffer, max_bytes) or DISABLE_LOWER_BUILTIN in stmt.annotations:
            return stmt
        return tirx.AllocBuffer(stmt.buffer, {**dict(stmt.annotations), DISABLE_LOWER_BUILTIN: tirx.IntImm("int32", 1)},
                                stmt.span)

    @tvm.tirx.transform.prim_func_pass(opt_level=0, name="StackRegisterTiles")
    def _pass(func: tirx.PrimFunc, _mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tirx.PrimFunc:
        return func.with_body(tvm_ffi.structural_map(func.body, [(tirx.AllocBuffer, annotate)]))

    return _pass


def _cpu_pipeline() -> tuple:
    default, finalize_host, finalize_device = tvm.tirx.get_tir_pipeline("default")

    def host() -> tvm.transform.Pass:
        return tvm.transform.Sequential([StackRegisterTiles(), finalize_host()])

    return default, host, finalize_device


def register_cpu_pipeline() -> str:
    """Register (once) and name the TIR pipeline that keeps register tiles on the stack."""
    if CPU_TIR_PIPELINE not in tvm.tirx.compilation_pipeline.PIPELINE_MAP:
        tvm.tirx.compilation_pipeline.register_tir_pipeline(CPU_TIR_PIPELINE, _cpu_pipeline)
    return CPU_TIR_PIPELINE
