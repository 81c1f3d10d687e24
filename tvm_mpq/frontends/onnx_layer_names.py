"""The name a user sees for each layer of an ONNX model: its node's name, or, for a model written
by PyTorch's dynamo exporter, the module path of the ``nn.Module`` that computed it.

``torch.onnx.export`` (``dynamo=True``, the default since PyTorch 2.9) names nodes by op and
counter (``node_Conv_814``, ``node_linear_3``), which says nothing about where a layer sits in the
model; it records the module path of each node in the metadata ``pkg.torch.onnx.name_scopes``:
the scopes from the root module down, then the traced op (``['', '_blocks.5',
'_blocks.5._expand_conv', 'conv2d_14']``), and it names each weight initializer by its
parameter (``_blocks.5._expand_conv.weight``). The layer name is the module that owns the
weight (``_blocks.5._expand_conv``, as PyTorch users and the zoo's PyTorch path name it), else the
innermost module scope. (A conv the exporter fused with the batch norm after it,
``FuseBatchNormIntoConv``, carries the batch norm's scope, ``_blocks.5._bn0``, but still the
conv's weight name.) Nodes without that metadata keep their node name; two layers of one
module are told apart by the layer table (``name#2``).
"""

from __future__ import annotations

import ast

import onnx

NAME_SCOPES = "pkg.torch.onnx.name_scopes"
"""Node metadata key under which PyTorch's dynamo exporter records the module scopes of a node."""


def module_path(node: onnx.NodeProto) -> str | None:
    """The innermost module scope of ``node`` (dynamo exporter metadata), or None when the node
    has none (other exporters, nodes of the root module itself, unreadable metadata)."""
    text = next((p.value for p in node.metadata_props if p.key == NAME_SCOPES), None)
    if text is None:
        return None
    try:
        scopes = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    if not isinstance(scopes, list) or len(scopes) < 2 or not all(isinstance(s, str) for s in scopes):
        return None
    return scopes[-2] or None  # (the last scope is the traced op's own name)


def layer_name(node: onnx.NodeProto, index: int, weight: str) -> str:
    """The name a layer computed by ``node`` (the ``index``-th node of its graph) from the
    initializer ``weight`` is shown as."""
    scope = module_path(node)
    if scope is None:
        return node.name or f"{node.op_type}_{index}"
    owner = weight.removesuffix(".weight")
    return owner if owner != weight and owner else scope
