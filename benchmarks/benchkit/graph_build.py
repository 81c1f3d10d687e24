"""A Relax module built for a target by the build's own passes, with or without one of them (the
A/B of a pass's benchmark)."""

from __future__ import annotations


def build_without(mod, target, left_out: str | None = None):
    """``mod`` through the target's build passes (``tvm_mpq.compiler.build.build_passes``), the
    pass named ``left_out`` removed, then codegen: ``(executable, {kernel: rule})``."""
    import tvm

    from tvm_mpq.compiler import build as build_mod

    passes = [p for p in build_mod.build_passes(target, None) if p.info.name != left_out]
    with target, tvm.transform.PassContext(opt_level=3):
        lowered = tvm.transform.Sequential(passes)(mod)
    return build_mod.codegen(lowered, target), build_mod.kernel_schedulers(lowered)
