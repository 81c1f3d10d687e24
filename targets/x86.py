"""The host x86-64 CPU: ``llvm`` with the detected ``mcpu`` (e.g. ``znver3``, ``skylake-avx512``)."""

from __future__ import annotations

import os
from typing import Any

from targets.base import DeployTarget, register_target
from targets.elf import EM_X86_64


TRIPLE = "x86_64-linux-gnu"


def detect_host_cpu() -> str | None:
    """LLVM's name for this machine's CPU (``tvm.target.codegen.llvm_get_system_cpu``), or None
    when LLVM only knows it as ``generic``."""
    from tvm_mpq.runtime.executor import host_cpu

    return host_cpu()


def _host_mattr(cpu: str | None) -> list[str]:
    from tvm_mpq.runtime.executor import host_mattr

    return host_mattr(cpu)


@register_target
class X86Target(DeployTarget):
    """x86-64 Linux. ``mcpu`` defaults to this host's CPU: a library built with it may use
    instructions (AVX-512, VNNI) another x86 host lacks; pass ``mcpu="x86-64-v3"`` (or another
    LLVM CPU name) to build for a different x86 machine."""

    name = "x86"
    description = "x86-64 host CPU (llvm, detected mcpu)"
    device_kind = "cpu"
    elf_machine = EM_X86_64
    server_arch = "x86_64"

    def __init__(self, mcpu: str | None = None, num_cores: int | None = None) -> None:
        if mcpu is not None:
            from tvm.target import codegen

            from tvm_mpq.errors import MpqError

            if not codegen.llvm_is_valid_cpu(mcpu, TRIPLE):
                raise MpqError(f"--mcpu {mcpu!r} is not an x86-64 CPU LLVM knows (e.g. x86-64-v3, skylake-avx512, "
                               "cascadelake, icelake-server, sapphirerapids, alderlake, znver3, znver4)")
        self.mcpu = mcpu if mcpu is not None else detect_host_cpu()
        self.mattr = [] if mcpu is not None else _host_mattr(self.mcpu)
        self.num_cores = num_cores or os.cpu_count() or 1

    def target_dict(self) -> dict[str, Any]:
        """``{"kind": "llvm", "mcpu": ..., "num-cores": N}``, with ``mattr`` switching off the
        extensions this host hides from its CPU model (host builds only) and holding the LLVM
        tuning the kernels want (:func:`tvm_mpq.kernels.cpu_isa.with_llvm_tuning`)."""
        from tvm_mpq.kernels.cpu_isa import with_llvm_tuning

        d: dict[str, Any] = {"kind": "llvm", "mtriple": TRIPLE, "num-cores": self.num_cores}
        if self.mcpu:
            d["mcpu"] = self.mcpu
        if self.mattr:
            d["mattr"] = list(self.mattr)
        return with_llvm_tuning(d)
