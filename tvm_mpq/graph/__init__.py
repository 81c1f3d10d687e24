"""Graph analysis on the stage-A Relax module: the layer table of MAC ops."""

from tvm_mpq.graph.layer_table import Layer, LayerTable, build_layer_table, model_macs

__all__ = ["Layer", "LayerTable", "build_layer_table", "model_macs"]
