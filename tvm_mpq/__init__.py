"""tvm-mpq: mixed-precision post-training quantization for Apache TVM (Relax).

One call, model in, precision config and compiled executable out::

    import tvm_mpq
    q = tvm_mpq.quantize("efficientnet-lite0", rate=50, method="quantunev2", target="x86")
    q.config.save("rate50.json"); q.export("rate50.so"); q.run(feed)

Data flow (one sub-package per step):
``frontends`` (load ONNX / torch.export into the source graph) -> ``graph`` (layer table)
-> ``calibration`` (observers, cache) -> ``sensitivity`` (QuantuneV2 and baselines)
-> ``allocation`` (BOPs, rate-target allocation) -> ``config`` (precision config JSON)
-> ``compiler`` (the precision pass, kernels, build) -> ``targets``.
Graph rewrites live in the top-level ``relay_passes`` package, targets in ``targets``;
docs/design.md has the data flow, the floors of the import graph and the formulas.
"""

__version__ = "0.1.0"

__all__ = ["Quantized", "config_for_rate", "quantize"]


def __getattr__(name: str):
    # Lazy: ``import tvm_mpq.errors`` must not load TVM, torch and every package above it.
    if name in __all__:
        from tvm_mpq import api

        return getattr(api, name)
    raise AttributeError(f"module 'tvm_mpq' has no attribute {name!r}")
