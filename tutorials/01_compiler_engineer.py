"""Tutorial 1 (compiler engineers): add a sensitivity metric, a sensitivity method and a graph
pass, then compose them with tvm-mpq's passes and TVM's own in one ``tvm.transform.Sequential``.

    python tutorials/01_compiler_engineer.py      # result.json in $TVM_MPQ_TUTORIAL_OUT or ./out/tutorial1

What it shows, step by step:

1. a small PyTorch model imported at stage A (conv, batch-norm, relu separate; an explicit
   per-channel scale after one conv, as some exported models have);
2. a new *local metric* (``max_abs_error``): register it and the analysis measures it on every
   layer in its second inference pass, next to SQNR / MSE / cosine / KL;
3. a new *sensitivity method* ranking layers by that metric: register it and ``analyze`` /
   ``tvm-mpq analyze --method`` can use it;
4. a new *graph pass* (``FoldScaleIntoConv``), written like TVM's
   ``FoldBatchnormToConv2D``: a DPL pattern declared once and one rewriter; it changes a weight,
   so it keeps the layer's precision annotation true (the weight scales of the new weight);
5. the compile pipeline, one ``Sequential``: ``AnnotatePrecision`` writes the config into the IR
   (``R.mpq.precision`` next to each conv/matmul, keyed by layer name), then tvm-mpq's
   ``FoldBatchNorm`` and ``LowerToInteger``, then TVM's ``LegalizeOps`` / ``FuseOps`` /
   ``FuseTIR`` and codegen; our pass goes in after the annotation, the annotated module is
   printed, a pass instrument shows how the IR changes after each step;
6. a pass of our own edits one decision in the IR (conv2 back to fp32): the lowering follows
   it, and the compiled model has one int8 layer less and a different ``n_qdq``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

from relay_passes import map_annotations, reannotate_for_weight
from tvm_mpq.allocation import allocate_by_rate
from tvm_mpq.compiler import compile_model
from tvm_mpq.compiler.inspect_ir import mac_census
from tvm_mpq.compiler.pipeline import compile_pipeline, insert_after
from tvm_mpq.config.build import build_config
from tvm_mpq.frontends.torch_frontend import from_module
from tvm_mpq.graph import build_layer_table
from tvm_mpq.graph.layer_table import LayerTable
from tvm_mpq.metrics import LocalMetric, register_metric
from tvm_mpq.runtime.executor import compile_graph
from tvm_mpq.sensitivity import LayerMetrics, SensitivityMethod, analyze, register_method


OUT = Path(os.environ.get("TVM_MPQ_TUTORIAL_OUT", "out/tutorial1"))
OUT.mkdir(parents=True, exist_ok=True)


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
    covers the scale too (one fewer fp32 op in the int8 group's epilogue). The weight changes,
    so the layer's precision annotation gets the scales of the new weight."""

    def __init__(self) -> None:
        self.data = wildcard()
        self.weight = is_const()
        self.conv = is_op("relax.nn.conv2d")(self.data, self.weight)
        self.scale = is_const()
        self.pattern = is_op("relax.multiply")(self.conv, self.scale)

    def transform_function(self, func: relax.Function, mod: tvm.IRModule, ctx) -> relax.Function:
        def rewriter(expr: relax.Expr, matches: dict) -> relax.Expr:
            scale = matches[self.scale].value.numpy()
            conv = matches[self.conv]
            if scale.size not in (1, scale.shape[1] if scale.ndim == 4 else -1) or conv.attrs.kernel_layout != "OIHW":
                return expr  # not a per-output-channel scale: leave it
            weight = (matches[self.weight].value.numpy() * scale.reshape(-1, 1, 1, 1)).astype("float32")
            data = reannotate_for_weight(matches[self.data], weight, 0)  # the annotation stays true
            return relax.Call(conv.op, [data, relax.const(weight)], conv.attrs)

        return rewrite_call(self.pattern, rewriter, func)


# -- 5. the compile pipeline: annotate, print, compose -----------------------------------------
pipeline = insert_after(compile_pipeline(graph, config), "AnnotatePrecision", FoldScaleIntoConv())
names = [p.info.name for p in pipeline.passes]
print(f"5. the compile pipeline, one Sequential of {len(names)} passes:\n   " + " -> ".join(names[:12]) + " -> ...")
lowering_at = names.index("LowerToInteger")
annotated = tvm.transform.Sequential(list(pipeline.passes[:lowering_at]))(graph.mod)
print("   the module LowerToInteger reads (each layer's precision right before its conv/matmul):")
for line in annotated.script().splitlines():
    if "R.mpq.precision(" in line:
        print("     " + line.strip().split(" = ", 1)[1])
    elif "R.nn.conv2d(" in line or "R.matmul(" in line:
        print("       " + line.strip().split(" = ", 1)[1][:70] + " ...")


@tvm.instrument.pass_instrument
class PrintChanges:
    """After each of ``STEPS`` (its first run): bindings, batch-norms, multiplies, MAC dtypes."""

    def __init__(self) -> None:
        self.has_multiply: dict[str, bool] = {}

    def run_after_pass(self, mod: tvm.IRModule, info) -> None:
        if info.name in STEPS and info.name not in self.has_multiply:
            main = mod["main"]
            n_bindings = sum(len(block.bindings) for block in main.body.blocks)
            text = str(main)
            self.has_multiply[info.name] = "R.multiply" in text
            print(f"   after {info.name:<20} {n_bindings:>3} bindings; batch_norm: {'R.nn.batch_norm' in text}; "
                  f"any multiply: {'R.multiply' in text}; MACs: {dict(mac_census(mod)) or 'fused'}")


STEPS = ["FoldConstant", "AnnotatePrecision", "FoldScaleIntoConv", "FoldBatchNorm", "LowerToInteger", "LegalizeOps",
         "FuseOps", "FuseTIR"]
print("   step by step (conv1 stays fp32, so its batch-norm stays; the multiplies after LowerToInteger\n"
      "   are the int8 groups' requantization scales):")
changes = PrintChanges()
with tvm.transform.PassContext(instruments=[changes]):
    compiled = compile_model(graph, config, pipeline=pipeline)
assert changes.has_multiply["FoldConstant"] and not changes.has_multiply["FoldScaleIntoConv"], \
    "FoldScaleIntoConv should have folded the scale into conv2's weight"
print(f"   built: {compiled.stats['int8_layers']} int8 layers, n_qdq {compiled.n_qdq}")


# -- 6. a pass of our own changes one decision in the IR ---------------------------------------
@relax.transform.function_pass(opt_level=0, name="KeepFp32")
class KeepFp32:
    """Edit one layer's precision annotation to fp32 (the lowering then leaves it alone)."""

    def __init__(self, layer: str) -> None:
        self.layer = layer

    def transform_function(self, func: relax.Function, mod: tvm.IRModule, ctx) -> relax.Function:
        return map_annotations(func, lambda a: a.as_fp32() if a.layer == self.layer else a)


edited = compile_model(graph, config, pipeline=insert_after(pipeline, "FoldScaleIntoConv", KeepFp32("conv2")))
print(f"6. KeepFp32('conv2') after FoldScaleIntoConv: {edited.stats['int8_layers']} int8 layers "
      f"(was {compiled.stats['int8_layers']}), n_qdq {edited.n_qdq} (was {compiled.n_qdq})")
assert edited.stats["int8_layers"] == compiled.stats["int8_layers"] - 1 and edited.n_qdq != compiled.n_qdq

fp32 = compile_graph(graph)
errors, agree = {}, {}
for label, model in (("mixed", compiled), ("conv2 fp32", edited)):
    worst, same = 0.0, 0
    for feed in feeds:
        got, ref = model.run(feed)[0], fp32.run(feed)[0]
        worst = max(worst, float(np.abs(got - ref).max() / np.abs(ref).max()))
        same += int(got.argmax() == ref.argmax())
        assert got.argmax() == ref.argmax() or worst < 0.1, "the mixed-precision model lost the prediction"
    errors[label], agree[label] = worst, same / len(feeds)
    print(f"   {label}: max |model - fp32| / max|fp32| = {worst:.4f} over {len(feeds)} inputs")

# what the tutorial found, for tests/test_tutorials.py
(OUT / "result.json").write_text(json.dumps({
    "layers": table.names(), "sensitivity": report.sensitivity,
    "max_abs_error": {n: report.measurement.metrics[n].extra["max_abs_error"] for n in report.sensitivity},
    "fp32_layers": config.fp32_layers(), "achieved_rate": config.provenance["bops_reduction_rate"],
    "pipeline": names, "scale_folded": not changes.has_multiply["FoldScaleIntoConv"],
    "int8_layers": compiled.stats["int8_layers"], "n_qdq": compiled.n_qdq,
    "edited_int8_layers": edited.stats["int8_layers"], "edited_n_qdq": edited.n_qdq,
    "max_relative_error": errors, "top1_agreement": agree}, indent=1))
print("done")
