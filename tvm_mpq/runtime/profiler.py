"""Where a compiled model spends its time: per kernel, and summed by kind of kernel.

TVM 0.27's Relax VM has no profiler; its instrument hook (``VirtualMachine.set_instrument``) is
called before and after every call the VM makes, which is enough to time each kernel on the
CPU (a kernel call is synchronous there). The hook costs a few microseconds per call, small
next to the kernels of a CNN. Each kernel is classified with what the build recorded
(``build_module``'s ``info["kernels"]``: the rule that scheduled it, ``database`` or
``default``) and its name::

    MAC (kernel rule)      conv/dense kernels scheduled by tvm-mpq's rules
    MAC (tuned)            conv/dense kernels scheduled from the MetaSchedule database
    MAC (TVM default)      conv/dense kernels left unscheduled
    layout                 transposes / layout transforms
    quantize/dequantize    fused chains that round or cast between float and integer codes
    pool/reduction         pooling, means, softmax-like reductions
    elementwise/other      the rest (pads, activations, adds)
    VM                     the VM's own builtins (allocation, shape handling)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from tvm_mpq.kernels import GENERIC_RULES
from tvm_mpq.runtime.executor import host_tensor
from tvm_mpq.vm_call_timer import CallTimer

KINDS = ("MAC (kernel rule)", "MAC (tuned)", "MAC (TVM default)", "layout", "quantize/dequantize",
         "pool/reduction", "elementwise/other", "VM")
_MAC_MARKERS = ("conv2d", "matmul", "dense")
_REDUCTION_MARKERS = ("pool", "mean", "sum", "softmax", "norm", "max1", "_max")


@dataclass(frozen=True)
class KernelTime:
    """One kernel's calls per inference and its mean time per inference (ms)."""

    name: str
    kind: str
    calls: int
    ms: float


def kernel_kind(name: str, scheduled_by: str | None) -> str:
    """The :data:`KINDS` entry of a kernel from its symbol and what scheduled it."""
    if name.startswith("vm.builtin") or name.startswith("vm."):
        return "VM"
    is_mac = any(m in name for m in _MAC_MARKERS)
    if is_mac and scheduled_by not in (None, "default", "database", *GENERIC_RULES):
        return "MAC (kernel rule)"
    if is_mac:
        return "MAC (tuned)" if scheduled_by == "database" else "MAC (TVM default)"
    if "transpose" in name or "layout_transform" in name or "permute" in name:
        return "layout"
    if "round" in name or ("cast" in name and ("divide" in name or "multiply" in name or "subtract" in name)):
        return "quantize/dequantize"
    if any(m in name for m in _REDUCTION_MARKERS):
        return "pool/reduction"
    return "elementwise/other"


def profile_kernels(executable: relax.VMExecutable, inputs: Sequence[np.ndarray],
                    scheduled_by: dict[str, str] | None = None, repeats: int = 10,
                    device: tvm.runtime.Device | None = None) -> list[KernelTime]:
    """Time every kernel call of ``main`` over ``repeats`` runs (after a warm-up); per kernel the
    mean time per inference, slowest first. ``scheduled_by``: the build's kernel -> scheduler
    map (``build_module``'s ``info["kernels"]``)."""
    dev = device or tvm.cpu()
    vm = relax.VirtualMachine(executable, dev)
    args = [host_tensor(x, dev) for x in inputs]
    vm["main"](*args)
    timer = CallTimer()
    vm.set_instrument(timer.hook)
    for _ in range(repeats):
        vm["main"](*args)
    return _kernel_rows(timer.totals, scheduled_by, repeats)


def profile_kernels_isolated(executable: relax.VMExecutable, inputs: Sequence[np.ndarray],
                             scheduled_by: dict[str, str] | None = None, runs: int = 20, rounds: int = 7,
                             device: tvm.runtime.Device | None = None) -> list[KernelTime]:
    """Each kernel call of one inference timed on its own: its arguments captured during a run
    of ``main``, then the call repeated ``runs`` times per round, the best of ``rounds`` rounds
    (ms per call, summed over a kernel's calls). Steadier than :func:`profile_kernels` on a
    noisy machine (no VM or instrument cost, a warm cache), so it answers "which kernel got
    faster" rather than "how long does an inference take"."""
    dev = device or tvm.cpu()
    vm = relax.VirtualMachine(executable, dev)
    args = [host_tensor(x, dev) for x in inputs]
    calls: list[tuple[str, object, list]] = []

    def capture(func, symbol, before_run, _ret, *call_args) -> int:  # noqa: ANN001 - the VM's signature
        name = str(symbol)
        if before_run and not name.startswith("vm."):
            calls.append((name, func, [a.copyto(dev) if isinstance(a, tvm.runtime.Tensor) else a
                                       for a in call_args]))
        return 0

    vm.set_instrument(capture)
    vm["main"](*args)
    totals: dict[str, list[float]] = {}
    for name, func, call_args in calls:
        func(*call_args)
        best = float("inf")
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(runs):
                func(*call_args)
            best = min(best, (time.perf_counter() - start) / runs)
        entry = totals.setdefault(name, [0.0, 0])
        entry[0] += best
        entry[1] += 1
    return _kernel_rows(totals, scheduled_by, 1)


def _kernel_rows(totals: dict[str, list[float]], scheduled_by: dict[str, str] | None,
                 inferences: int) -> list[KernelTime]:
    """:class:`KernelTime` rows, slowest first, from per-kernel ``[seconds, calls]`` summed over
    ``inferences`` runs of the model."""
    scheduled_by = scheduled_by or {}
    rows = [KernelTime(name, kernel_kind(name, scheduled_by.get(name)), int(n) // inferences, s * 1e3 / inferences)
            for name, (s, n) in totals.items()]
    return sorted(rows, key=lambda r: -r.ms)


def time_by_kind(rows: Sequence[KernelTime]) -> dict[str, float]:
    """Milliseconds per inference summed by kernel kind (every kind of :data:`KINDS`)."""
    out = {kind: 0.0 for kind in KINDS}
    for row in rows:
        out[row.kind] += row.ms
    return out
