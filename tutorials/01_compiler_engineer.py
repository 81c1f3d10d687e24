"""Tutorial 1 (compiler engineers): add a sensitivity metric, a sensitivity method and a graph
pass, then compose them with tvm-mpq's passes and TVM's own in one ``tvm.transform.Sequential``.

    python tutorials/01_compiler_engineer.py

What it shows, step by step:

1. a small PyTorch model imported at stage A (conv, batch-norm, relu separate; an explicit
   per-channel scale after one conv, as some exported models have);
2. a new *local metric* (``max_abs_error``): register it and the analysis measures it on every
   layer in its second inference pass, next to SQNR / MSE / cosine / KL;
3. a new *sensitivity method* ranking layers by that metric: register it and ``analyze`` /
   ``tvm-mpq analyze --method`` can use it;
4. a new *graph pass* (``FoldScaleIntoConv``), written like TVM's
   ``FoldBatchnormToConv2D``: a DPL pattern declared once and one rewriter;
5. a ``Sequential`` of TVM's ``FoldConstant``, our new pass, tvm-mpq's ``FoldBatchNorm`` and
   ``LowerToInteger``, then TVM's ``LegalizeOps`` / ``FuseOps`` / ``FuseTIR``; a pass
   instrument prints how the IR changes after each step; the result is built and run.
"""

from __future__ import annotations

import numpy as np
import torch
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

from relay_passes import FoldBatchNorm, LowerToInteger
from tvm_mpq.allocation import allocate_by_rate
from tvm_mpq.compiler.inspect_ir import mac_census
from tvm_mpq.compiler.pipeline import bind_params, integer_plans
from tvm_mpq.config.build import build_config
from tvm_mpq.frontends.torch_frontend import from_module
from tvm_mpq.graph import build_layer_table
from tvm_mpq.graph.layer_table import LayerTable
from tvm_mpq.metrics import LocalMetric, register_metric
from tvm_mpq.runtime.executor import compile_graph
from tvm_mpq.sensitivity import LayerMetrics, SensitivityMethod, analyze, register_method


# -- 1. a model --------------------------------------------------------------------------------
class ScaledNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = torch.nn.BatchNorm2d(16).eval()
        self.conv2 = torch.nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.scale = torch.nn.Parameter(torch.linspace(0.5, 2.0, 16).reshape(1, 16, 1, 1))
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.conv2(y) * self.scale)
        return self.fc(y.mean((2, 3)))


graph = from_module(ScaledNet().eval(), {"x": np.zeros((1, 3, 32, 32), np.float32)}, "scaled-net")
rng = np.random.default_rng(0)
feeds = [{"x": rng.normal(size=(1, 3, 32, 32)).astype(np.float32)} for _ in range(8)]
table = build_layer_table(graph)
print(f"1. {graph.name}: {len(table)} MAC layers: {', '.join(table.names())}")


# -- 2. a local metric: registered once, measured on every layer by the analysis -------------
@register_metric
class MaxAbsError(LocalMetric):
    """Largest absolute deviation of a layer's int8-simulated output from fp32."""

    name = "max_abs_error"
    higher_is_better = False

    def __init__(self) -> None:
        self.worst = 0.0

    def update(self, x: np.ndarray, x_hat: np.ndarray) -> None:
        self.worst = max(self.worst, float(np.abs(x.astype(np.float64) - x_hat).max()))

    def value(self) -> float:
        return self.worst


# -- 3. a sensitivity method using it ----------------------------------------------------------
@register_method
class MaxErrorOrder(SensitivityMethod):
    """Largest max-abs-error (relative to the layer's SQNR-free scale) first."""

    name = "max-error"

    def rank(self, table: LayerTable, metrics: dict[str, LayerMetrics]) -> list[str]:
        return sorted(table.names(), key=lambda n: -metrics[n].extra["max_abs_error"])


report = analyze(graph, feeds, "max-error")
print("2-3. sensitivity list by max_abs_error:",
      [(n, round(report.measurement.metrics[n].extra["max_abs_error"], 4)) for n in report.sensitivity])
precisions = allocate_by_rate(table, report.sensitivity, 60)
config = build_config(graph, table, precisions, report.measurement.act_ranges, {"method": "max-error"})
print(f"   rate 60%: fp32 layers {config.fp32_layers()}, achieved {config.provenance['bops_reduction_rate']:.1f}%")


# -- 4. a graph pass ---------------------------------------------------------------------------
@relax.transform.function_pass(opt_level=0, name="FoldScaleIntoConv")
class FoldScaleIntoConv:
    """Fold a constant per-output-channel scale after a conv2d into its weight:
    ``conv2d(x, W) * s -> conv2d(x, W * s)``. Quantizing the folded weight per channel then
    covers the scale too (one fewer fp32 op in the int8 group's epilogue)."""

    def __init__(self) -> None:
        self.weight = is_const()
        self.conv = is_op("relax.nn.conv2d")(wildcard(), self.weight)
        self.scale = is_const()
        self.pattern = is_op("relax.multiply")(self.conv, self.scale)

    def transform_function(self, func: relax.Function, mod: tvm.IRModule, ctx) -> relax.Function:
        def rewriter(expr: relax.Expr, matches: dict) -> relax.Expr:
            scale = matches[self.scale].value.numpy()
            conv = matches[self.conv]
            if scale.size not in (1, scale.shape[1] if scale.ndim == 4 else -1) or conv.attrs.kernel_layout != "OIHW":
                return expr  # not a per-output-channel scale: leave it
            weight = matches[self.weight].value.numpy() * scale.reshape(-1, 1, 1, 1)
            return relax.Call(conv.op, [conv.args[0], relax.const(weight.astype("float32"))], conv.attrs)

        return rewrite_call(self.pattern, rewriter, func)


# -- 5. compose and inspect --------------------------------------------------------------------
@tvm.instrument.pass_instrument
class PrintChanges:
    """After each top-level pass: how many bindings and which MAC dtypes the module has."""

    def __init__(self) -> None:
        self.has_multiply: dict[str, bool] = {}

    def run_after_pass(self, mod: tvm.IRModule, info) -> None:
        if info.name in STEPS:
            main = mod["main"]
            n_bindings = sum(len(block.bindings) for block in main.body.blocks)
            text = str(main)
            self.has_multiply[info.name] = "R.multiply" in text
            print(f"   after {info.name:<20} {n_bindings:>3} bindings; batch_norm: {'R.nn.batch_norm' in text}; "
                  f"any multiply: {'R.multiply' in text}; MACs: {dict(mac_census(mod)) or 'fused'}")


STEPS = ["FoldConstant", "FoldScaleIntoConv", "FoldBatchNorm", "LowerToInteger", "LegalizeOps", "FuseOps", "FuseTIR"]
seq = tvm.transform.Sequential([
    relax.transform.FoldConstant(),      # TVM: bias reshapes, weight transposes -> constants
    FoldScaleIntoConv(),                 # this tutorial
    FoldBatchNorm([layer.var for layer in table if not config.layers[layer.name].is_fp32]),  # tvm-mpq
    LowerToInteger(integer_plans(table, config)),  # tvm-mpq: the precision pass
    relax.transform.LegalizeOps(),       # TVM: ops -> TIR
    relax.transform.AnnotateTIROpPattern(),
    relax.transform.FuseOps(),           # TVM: conv + epilogue + requantize -> one kernel
    relax.transform.FuseTIR(),
])
print("5. the Sequential, step by step (conv1 stays fp32, so its batch-norm stays; the multiplies after\n"
      "   LowerToInteger are the int8 groups' requantization scales):")
changes = PrintChanges()
with tvm.transform.PassContext(opt_level=3, instruments=[changes]):
    lowered = seq(bind_params(graph))
assert changes.has_multiply["FoldConstant"] and not changes.has_multiply["FoldScaleIntoConv"], \
    "FoldScaleIntoConv should have folded the scale into conv2's weight"
kernels = [gv.name_hint for gv in lowered.functions if gv.name_hint.startswith("fused_conv2d")]
print(f"   fused integer conv kernels: {kernels}")

executable = tvm.compile(lowered, target=tvm.target.Target({"kind": "llvm"}))
vm = relax.VirtualMachine(executable, tvm.cpu())
fp32 = compile_graph(graph)
worst = 0.0
for feed in feeds:
    got = vm["main"](tvm.runtime.tensor(feed["x"]))[0].numpy()
    ref = fp32.run(feed)[0]
    worst = max(worst, float(np.abs(got - ref).max() / np.abs(ref).max()))
    assert got.argmax() == ref.argmax() or worst < 0.1, "the mixed-precision model lost the prediction"
print(f"   built and ran: max |mixed - fp32| / max|fp32| = {worst:.4f} over {len(feeds)} inputs")
print("done")
