"""Which MAC op of a Relax function is which layer: the layer table's stable names, by position.

After ``BindParams`` a weight is a constant and its parameter name is gone, so the passes that
rewrite chosen layers find them the way the precision pass does: the k-th MAC op (conv2d,
conv1d, conv2d_transpose, matmul) of a function, in program order, is the k-th layer the layer
table lists for that function. A :class:`LayerKeys` holds those lists per function name; a pass
visits every Relax function of the module and names the MAC ops of those it has a list for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import tvm
from tvm import relax

from tvm_mpq.graph.layer_table import MAC_OPS


def is_mac_call(value: relax.Expr) -> bool:
    """True for a call of one of the layer table's MAC ops."""
    return isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name in MAC_OPS


def bindings_of(func: relax.Function) -> list[relax.VarBinding]:
    """Every binding of ``func`` in program order."""
    return [b for block in func.body.blocks for b in block.bindings]


@dataclass(frozen=True)
class LayerKeys:
    """Stable layer names of the MAC ops of each Relax function (by function name, program order)."""

    by_function: Mapping[str, Sequence[str]] = field(default_factory=dict)

    @staticmethod
    def for_main(names: Sequence[str]) -> "LayerKeys":
        """The layer table's names, which describe ``main``."""
        return LayerKeys({"main": list(names)})

    def names(self) -> set[str]:
        return {n for names in self.by_function.values() for n in names}

    def name_macs(self, function_name: str, func: relax.Function) -> dict[relax.Var, str]:
        """MAC binding variable -> layer name for ``func`` (empty when no list is held for it).
        ValueError when the function has a different number of MAC ops than its list."""
        names = self.by_function.get(function_name)
        if names is None:
            return {}
        macs = [b.var for b in bindings_of(func) if is_mac_call(b.value)]
        if len(macs) != len(names):
            raise ValueError(f"function '{function_name}' has {len(macs)} MAC ops, the layer table lists {len(names)}")
        return dict(zip(macs, names))


def relax_functions(mod: tvm.IRModule) -> list[tuple[tvm.ir.GlobalVar, relax.Function]]:
    """The Relax functions of ``mod`` (PrimFuncs and externs skipped), in name order."""
    items = [(gv, f) for gv, f in mod.functions_items() if isinstance(f, relax.Function)]
    return sorted(items, key=lambda item: item[0].name_hint)
