"""tvm-mpq: mixed-precision post-training quantization for Apache TVM (Relax).

Data flow (one sub-package per step):
``frontends`` (load ONNX / torch.export into a stage-A Relax module) -> ``graph`` (layer table)
-> ``calibration`` (observers, cache) -> ``sensitivity`` (QuantuneV2 and baselines)
-> ``allocation`` (BOPs, rate-target allocation) -> ``config`` (precision config JSON).
Graph rewrites live in the top-level ``relay_passes`` package, targets in ``targets``.
"""

__version__ = "0.1.0"
