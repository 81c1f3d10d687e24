"""The precision config: which layer runs at which bit-width, with its quantization parameters."""

from tvm_mpq.config.precision_config import LayerPrecision, PrecisionConfig

__all__ = ["LayerPrecision", "PrecisionConfig"]
