"""Quantizer groups: layers that share an input (activation) quantizer change precision together.

Two MAC layers whose data operand is the same Relax tensor read it through one activation
quantizer (e.g. a ResNet block's first conv and its downsample conv), so they form one group;
the second operand of an activation x activation matmul is an activation quantizer too. A group
also owns its layers' weight quantizers, so layers sharing a weight parameter (tied weights) are
grouped as well.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm_mpq.graph.layer_table import LayerTable


@dataclass(frozen=True)
class QuantizerGroup:
    """One group: its activation tensors (Relax names), its layers (topological order), MACs."""

    index: int
    inputs: tuple[str, ...]
    layers: tuple[str, ...]
    macs: int

    def to_json(self) -> dict:
        """The group as a JSON object."""
        return {"index": self.index, "inputs": list(self.inputs), "layers": list(self.layers), "macs": self.macs}


def quantizer_groups(table: LayerTable) -> list[QuantizerGroup]:
    """Union the layers sharing an activation tensor or a weight; groups in order of their first layer."""
    parent = {layer.name: layer.name for layer in table}

    def find(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    owner: dict[str, str] = {}
    tensors: dict[str, list[str]] = {}
    for layer in table:
        acts = [layer.data_var] + ([layer.weight_var] if layer.weight_param is None else [])
        tensors[layer.name] = [a for a in acts if a]
        shared = tensors[layer.name] + ([f"param:{layer.weight_param}"] if layer.weight_param else [])
        for tensor in shared:
            if tensor in owner:
                parent[find(layer.name)] = find(owner[tensor])
            else:
                owner[tensor] = layer.name
    members: dict[str, list[str]] = {}
    for layer in table:
        members.setdefault(find(layer.name), []).append(layer.name)
    groups = []
    for index, names in enumerate(members.values()):
        inputs = sorted({t for n in names for t in tensors[n]})
        groups.append(QuantizerGroup(index, tuple(inputs), tuple(names),
                                     sum(table.by_name[n].macs for n in names)))
    return groups
