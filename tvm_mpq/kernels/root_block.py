"""A scheduled PrimFunc's root block, rebuilt with some of its fields replaced.

A scheduled PrimFunc's body is the realize of its root block, which holds the function-wide
allocations and the annotations the kernel rules write (the rule's name, AMX tiles). Passes that
run after scheduling (``target_build.passes.PrepackWeights``, ``kernels.cpu_amx.KeepCallerTileConfig``)
change it through :func:`with_root_block`.
"""

from __future__ import annotations

from typing import Any

import tvm
from tvm import s_tir


def with_root_block(func: tvm.tirx.PrimFunc, **changes: Any) -> tvm.tirx.PrimFunc:
    """``func`` with its root block's ``body``, ``alloc_buffers`` or ``annotations`` replaced by
    ``changes``."""
    realize = func.body
    if not isinstance(realize, s_tir.SBlockRealize):
        raise ValueError("a scheduled PrimFunc's body is the realize of its root block")
    root = realize.block
    fields = {"body": root.body, "alloc_buffers": root.alloc_buffers, "annotations": root.annotations, **changes}
    unknown = set(fields) - {"body", "alloc_buffers", "annotations"}
    if unknown:
        raise TypeError(f"with_root_block replaces body, alloc_buffers or annotations, not {sorted(unknown)}")
    block = s_tir.SBlock(root.iter_vars, root.reads, root.writes, root.name_hint, fields["body"], root.init,
                         fields["alloc_buffers"], root.match_buffers, fields["annotations"])
    return func.with_body(s_tir.SBlockRealize(realize.iter_values, realize.predicate, block))


def root_annotation(func: tvm.tirx.PrimFunc, key: str) -> Any:
    """The value of ``key`` among ``func``'s root-block annotations, or None (no root block, or
    no such annotation)."""
    block = getattr(func.body, "block", None)
    if block is None or block.annotations is None:
        return None
    return block.annotations.get(key)
