"""Quantize epilogues round whole vectors: TVM 0.27 does not mark ``tirx.nearbyint``
vectorizable, so its loop vectorizer emitted every rounding loop lane by lane
(``tvm_mpq.kernels.vector_intrinsics`` marks it). Real compiles, LLVM IR read back."""

from __future__ import annotations

import numpy as np
import torch
import tvm
from tvm import s_tir, tirx
from tvm.script import tirx as T

import tvm_mpq.kernels  # noqa: F401  (the build's import: marks nearbyint)
from tvm_mpq.api import config_for_rate
from tvm_mpq.compiler import compile_model
from tvm_mpq.config.precision_config import LayerPrecision
from tvm_mpq.frontends.torch_frontend import from_module


@T.prim_func
def _quantize(a: T.Buffer((64,), "float32"), b: T.Buffer((64,), "uint8")):
    for i in T.vectorized(64):
        b[i] = T.Cast("uint8", T.max(T.min(T.nearbyint(a[i] / T.float32(0.05)) + T.float32(3), T.float32(255)),
                                     T.float32(0)))


def test_the_vectorizer_keeps_a_rounding_loop_vectorized_and_rounds_half_to_even():
    assert tvm.ir.Op.get("tirx.nearbyint").get_attr("TVectorizable")
    with tvm.transform.PassContext(opt_level=3):
        lowered = tvm.ir.transform.Sequential([s_tir.transform.LowerOpaqueBlock(), tirx.transform.FlattenBuffer(),
                                               tirx.transform.VectorizeLoop(True)])(tvm.IRModule({"main": _quantize}))
    script = lowered["main"].script()
    assert "T.Ramp" in script and "_s in range" not in script, script
    lib = tvm.compile(tvm.IRModule({"main": _quantize}), target=tvm.target.Target({"kind": "llvm"}))
    values = (np.arange(64, dtype=np.float32) - 20) * np.float32(0.025)  # half steps: ties to even
    out = tvm.runtime.tensor(np.zeros(64, np.uint8))
    lib["main"](tvm.runtime.tensor(values), out)
    expected = np.clip(np.round(values / np.float32(0.05)) + 3, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(out.numpy(), expected)


class _BiasThenInt8(torch.nn.Module):
    """An fp32 1x1 conv with a bias (a batch-norm folded export), ReLU6, then a conv kept int8:
    the fp32 conv's epilogue quantizes for the int8 one (``+ bias -> clip -> round``)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c1 = torch.nn.Conv2d(16, 48, 1)
        self.c2 = torch.nn.Conv2d(48, 16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c2(torch.clamp(self.c1(x), 0, 6))


def test_an_fp32_conv_quantizing_for_an_int8_one_rounds_no_lane_alone():
    x = np.random.default_rng(0).normal(size=(1, 16, 28, 28)).astype(np.float32)
    graph = from_module(_BiasThenInt8().eval(), {"x": x}, "bias-then-int8")
    config, _ = config_for_rate(graph, [{"x": x}], 100, "inorder")
    first = next(iter(config.layers))
    config.layers[first] = LayerPrecision(None, None)
    compiled = compile_model(graph, config)
    module = compiled.executable.mod
    ir = "".join(m.inspect_source("ll") for m in [module, *module.imports] if m.kind == "llvm")
    assert "@llvm.nearbyint.v" in ir  # the quantize step rounds vectors
    assert "float @llvm.nearbyint.f32(" not in ir  # and no lane on its own
    simulated = compile_model(graph, config, simulate=True).run({"x": x})[0]
    got = compiled.run({"x": x})[0]
    step = (simulated.max() - simulated.min()) / 255
    assert np.abs(got - simulated).max() <= step
