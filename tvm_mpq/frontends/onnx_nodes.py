"""Writing ONNX nodes in place of one node: what the import's graph rewrites before TVM's importer
(:mod:`~tvm_mpq.frontends.onnx_recurrent`, :mod:`~tvm_mpq.frontends.onnx_dft`,
:mod:`~tvm_mpq.frontends.onnx_attention`) emit through."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx.helper


def node_attributes(node: onnx.NodeProto) -> dict:
    """A node's attributes by name, as Python values."""
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


@dataclass
class NodeWriter:
    """New nodes and constants that replace one node, named under ``prefix`` (its name); the
    constants go to ``values`` (the rewrite's name -> array table)."""

    prefix: str
    values: dict[str, np.ndarray]
    nodes: list[onnx.NodeProto] = field(default_factory=list)

    def const(self, tag: str, value: np.ndarray) -> str:
        name = f"{self.prefix}/{tag}"
        self.values[name] = np.array(value, order="C")  # (ascontiguousarray would make a scalar 1-d)
        return name

    def node(self, op_type: str, inputs: list[str], name: str, output: str, **attrs) -> str:
        """Append node ``name`` writing ``output``; returns ``output``."""
        self.nodes.append(onnx.helper.make_node(op_type, inputs, [output], name=name, **attrs))
        return output

    def op(self, op_type: str, inputs: list[str], tag: str, output: str | None = None, **attrs) -> str:
        """Append node ``prefix/tag`` writing ``output`` (default: its own name)."""
        name = f"{self.prefix}/{tag}"
        return self.node(op_type, inputs, name, output or name, **attrs)


__all__ = ["NodeWriter", "node_attributes"]
