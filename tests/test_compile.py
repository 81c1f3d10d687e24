"""The precision pass and the integer compile path: real TVM builds of real models."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import tvm
from tvm import relax

from relay_passes import AnnotatePrecision, FoldBatchNorm, PrecisionAnnotation, folded_layers, map_annotations
from tvm_mpq.allocation import allocate_by_rate
from tvm_mpq.calibration import calibrate
from tvm_mpq.compiler import compile_model
from tvm_mpq.compiler.inspect_ir import fp32_tensors_between_int_kernels, fuse, kernel_table, mac_census
from tvm_mpq.compiler.pipeline import bind_params, compile_pipeline, insert_after, precision_passes
from tvm_mpq.compiler.stages import folded_graph
from tvm_mpq.config.build import build_config
from tvm_mpq.config.precision_config import LayerPrecision, PrecisionConfig
from tvm_mpq.errors import MpqError
from tvm_mpq.graph import build_layer_table
from tvm_mpq.runtime.executor import compile_graph
from tvm_mpq.zoo import get

INT8_MAC = "uint8 x int8 -> int32"


def _config(graph, feeds, rate: float, order: list[str] | None = None) -> PrecisionConfig:
    table = build_layer_table(graph)
    ranges = {v: r[8] for v, r in calibrate(graph, feeds, table.activation_operands(), "minmax").items()}
    precisions = allocate_by_rate(table, order or table.names(), rate)
    return build_config(graph, table, precisions, ranges, {"requested_rate": rate})


def _fp32_config(graph) -> PrecisionConfig:
    return PrecisionConfig(graph.name, {layer.name: LayerPrecision(None, None) for layer in build_layer_table(graph)})


def _step(reference: np.ndarray) -> float:
    """One int8 step of the output tensor's range."""
    return float(reference.max() - reference.min()) / 255


@pytest.fixture(scope="module")
def small_int8(small_graph, small_feeds):
    config = _config(small_graph, small_feeds, 100)
    return config, compile_model(small_graph, config), compile_model(small_graph, config, simulate=True)


def test_integer_model_matches_qdq_simulation_within_one_step(small_graph, small_feeds, small_int8):
    _, integer, simulated = small_int8
    fp32 = compile_graph(small_graph)
    for feed in small_feeds:
        ref, got, sim = fp32.run(feed)[0], integer.run(feed)[0], simulated.run(feed)[0]
        assert np.abs(got - sim).max() <= _step(ref), "integer vs QDQ differ by more than one step"
        assert not np.array_equal(got, ref)  # it really is quantized


def test_fully_int8_graph_has_integer_kernels_and_fewer_qdq(small_int8):
    config, integer, _ = small_int8
    assert mac_census(integer.mod) == {INT8_MAC: 4}
    fused = fuse(integer.mod)
    assert fp32_tensors_between_int_kernels(fused) == 0
    conv_kernels = [row for row in kernel_table(fused) if "conv2d" in row[0]]
    assert conv_kernels and all(row[1][:2] == ["uint8", "int8"] for row in conv_kernels)
    assert integer.n_qdq_naive == 8 and integer.n_qdq < integer.n_qdq_naive
    assert integer.stats["bias_folded"] == 4


@pytest.mark.parametrize("model", ["small", "mtcnn-rnet"])
def test_fp32_config_reproduces_fp32_model(model, small_graph, small_feeds):
    """An all-fp32 config is the fp32 model, to float32 rounding: the compile folds each
    batch-norm into its conv's weight and bias (no batch-norm arithmetic is left) and its kernels
    sum in their own order, so outputs agree to ~1e-7."""
    if model == "small":
        graph, feeds = small_graph, small_feeds
    else:
        graph, feeds = get(model).build_graph(), get(model).calibration(4)
    compiled = compile_model(graph, _fp32_config(graph))
    fp32 = compile_graph(graph)
    assert compiled.n_qdq == 0 and INT8_MAC not in mac_census(compiled.mod)
    assert "R.nn.batch_norm" not in compiled.mod.script() and "R.divide" not in compiled.mod.script()
    for feed in feeds:
        np.testing.assert_allclose(compiled.run(feed)[0], fp32.run(feed)[0], rtol=1e-5, atol=1e-6)


def test_mixed_config_keeps_fp32_layers_untouched(small_graph, small_feeds):
    table = build_layer_table(small_graph)
    config = _config(small_graph, small_feeds, 60, order=[table.layers[1].name] + table.names()[:1] + table.names()[2:])
    assert config.layers[table.layers[1].name].is_fp32
    compiled = compile_model(small_graph, config)
    census = mac_census(compiled.mod)
    assert census[INT8_MAC] == len(table) - len(config.fp32_layers())
    assert census["float32 x float32 -> float32"] == len(config.fp32_layers())
    simulated = compile_model(small_graph, config, simulate=True)
    fp32 = compile_graph(small_graph)
    for feed in small_feeds:
        ref = fp32.run(feed)[0]
        assert np.abs(compiled.run(feed)[0] - simulated.run(feed)[0]).max() <= _step(ref)


def test_stage_ablation_a_vs_fused(small_graph, small_feeds, small_int8):
    config, fused, _ = small_int8
    per_layer = compile_model(small_graph, config, stage="A")
    assert per_layer.n_qdq == per_layer.n_qdq_naive == 8
    assert fused.n_qdq < per_layer.n_qdq
    # stage A keeps batch-norm in fp32 around the integer convs
    ops = {b.value.op.name for b in per_layer.mod["main"].body.blocks[0].bindings if isinstance(b.value, relax.Call)
           and isinstance(b.value.op, tvm.ir.Op)}
    assert "relax.nn.batch_norm" in ops
    fp32 = compile_graph(small_graph)
    for feed in small_feeds:
        ref = fp32.run(feed)[0]
        assert np.isfinite(per_layer.run(feed)[0]).all()
        assert np.abs(per_layer.run(feed)[0] - ref).max() < 0.2 * np.abs(ref).max()


def test_folded_graph_keeps_layer_names_and_function(small_graph, small_feeds):
    staged = folded_graph(small_graph)
    assert build_layer_table(staged).names() == build_layer_table(small_graph).names()
    names = [b.var.name for b in staged.mod["main"].body.blocks[0].bindings]
    assert len(names) == len(set(names))
    assert "batch_norm" not in str(staged.mod["main"])
    a, c = compile_graph(small_graph), compile_graph(staged)
    for feed in small_feeds:
        np.testing.assert_allclose(c.run(feed)[0], a.run(feed)[0], rtol=1e-4, atol=1e-5)


@tvm.instrument.pass_instrument
class _Recorder:
    def __init__(self):
        self.after: list[tuple[str, tvm.IRModule]] = []

    def run_after_pass(self, mod, info):
        self.after.append((info.name, mod))


def test_passes_compose_in_a_sequential_with_tvms_own(small_graph, small_int8):
    config = small_int8[0]
    seq = tvm.transform.Sequential(precision_passes(small_graph, config) + [
        relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(), relax.transform.FuseOps(),
        relax.transform.FuseTIR()])
    recorder = _Recorder()
    with tvm.transform.PassContext(opt_level=3, instruments=[recorder]):
        out = seq(small_graph.mod)
    seen = {name: mod for name, mod in recorder.after}  # the last module after each pass name
    order = [name for name, _ in recorder.after]
    steps = ["AnnotatePrecision", "FoldBatchNorm", "LowerToInteger", "LegalizeOps", "FuseOps", "FuseTIR"]
    assert [order.index(step) for step in steps] == sorted(order.index(step) for step in steps)
    assert "R.nn.batch_norm" not in str(seen["FoldBatchNorm"]["main"])
    assert str(seen["FoldBatchNorm"]["main"]).count("R.mpq.precision(") == 4
    lowered = seen["LowerToInteger"]
    assert mac_census(lowered) == {INT8_MAC: 4} and "R.mpq.precision" not in lowered.script()
    assert "R.nn.conv2d" not in str(seen["LegalizeOps"]["main"])
    fused_names = [gv.name_hint for gv in out.functions if gv.name_hint.startswith("fused_conv2d")]
    assert fused_names, "conv2d was not fused with its epilogue"
    ex = tvm.compile(out, target=tvm.target.Target({"kind": "llvm"}))
    assert ex is not None


def test_compile_pipeline_is_one_sequential_to_print_and_extend(small_graph, small_int8):
    pipeline = compile_pipeline(small_graph, small_int8[0])
    names = [p.info.name for p in pipeline.passes]
    order = ["BindParams", "AnnotatePrecision", "FoldBatchNorm", "LowerToInteger", "LegalizeOps", "FuseOps",
             "FuseTIR", "ScheduleKernels"]
    assert [names.index(n) for n in order] == sorted(names.index(n) for n in order)
    assert "AnnotatePrecision" in str(pipeline) and "FuseTIR" in str(pipeline)
    extended = insert_after(pipeline, "AnnotatePrecision", relax.transform.Normalize())
    new_names = [p.info.name for p in extended.passes]
    assert new_names[new_names.index("AnnotatePrecision") + 1] == "Normalize" and len(new_names) == len(names) + 1


def test_fold_batch_norm_only_named_layers(small_graph):
    table = build_layer_table(small_graph)
    names = {layer.name: PrecisionAnnotation.fp32(layer.name) for layer in table}
    with tvm.transform.PassContext(opt_level=0):
        mod = tvm.transform.Sequential([relax.transform.FoldConstant(), AnnotatePrecision(names, table),
                                        FoldBatchNorm(["conv1"])])(bind_params(small_graph))
    assert folded_layers(mod) == ["conv1"]
    assert str(mod["main"]).count("R.nn.batch_norm") == 1  # the depthwise conv's stays


@tvm.instrument.pass_instrument
class _PassNames:
    def __init__(self):
        self.names: list[str] = []

    def run_before_pass(self, mod, info):
        self.names.append(info.name)


@pytest.mark.parametrize("edit, message, by_lowering", [
    (lambda c, t: c.layers.update({"no_such_layer": LayerPrecision(None, None)}), "not in the model", False),
    (lambda c, t: c.layers.pop(t.layers[0].name), "does not cover", False),
    (lambda c, t: c.layers.update({t.layers[0].name: LayerPrecision(8, 16, None)}),
     "layer 'conv1' asks for w8a16: .*at most 8-bit", True),
    (lambda c, t: c.layers.update({t.layers[0].name: LayerPrecision(8, 8, None)}),
     "layer 'conv1' has no activation quantizer", True),
])
def test_invalid_config_is_rejected_before_building(small_graph, small_int8, edit, message, by_lowering):
    """A config that does not fit the model fails before any pass runs; a precision the integer
    kernels cannot run fails in the lowering, naming the layer, before anything is built."""
    config = PrecisionConfig.from_json(small_int8[0].to_json())
    edit(config, build_layer_table(small_graph))
    recorder = _PassNames()
    with tvm.transform.PassContext(instruments=[recorder]):
        with pytest.raises(MpqError, match=message):
            compile_model(small_graph, config)
    assert recorder.names[-1:] == (["LowerToInteger"] if by_lowering else [])
    assert "LegalizeOps" not in recorder.names


class _QKNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x) @ x.transpose(1, 2)


def test_activation_x_activation_matmul_without_its_second_quantizer_is_one_line():
    from tvm_mpq.frontends.torch_frontend import from_module
    from tvm_mpq.quantization.quantizers import ActQParams

    graph = from_module(_QKNet(), {"x": np.zeros((1, 4, 8), np.float32)}, "qk")
    table = build_layer_table(graph)
    matmul = next(layer for layer in table if layer.kind == "matmul")
    layers = {layer.name: LayerPrecision(None, None) for layer in table}
    layers[matmul.name] = LayerPrecision(8, 8, ActQParams(0.1, 0, 8))
    with pytest.raises(MpqError, match=f"layer '{matmul.name}' multiplies two activations and has no quantizer "
                                       "for the second"):
        compile_model(graph, PrecisionConfig(graph.name, layers))


class _Heads(torch.nn.Module):
    """Self-attention with 3 heads of 26 (a small ALBERT's width per head): neither the depth of
    ``q k^T`` nor the columns of ``p v`` are whole groups of the dot product or whole vectors."""

    def __init__(self, width: int = 78, heads: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.qkv = torch.nn.Linear(width, 3 * width)
        self.out = torch.nn.Linear(width, width)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        q, k, v = (p.reshape(n, t, self.heads, c // self.heads).transpose(1, 2) for p in self.qkv(x).chunk(3, -1))
        p = torch.softmax(q @ k.transpose(-1, -2) / 5.0, dim=-1)
        return self.out((p @ v).transpose(1, 2).reshape(n, t, c))


def test_int8_attention_products_compute_their_simulation():
    """``--int8-attention``: both products of two activations run on codes (the second operand's
    quantizer calibrated into the config as ``b_act``, JSON round trip included), zero points
    corrected by row and column sums, depth and columns padded for the kernel; the integer build
    computes the QDQ simulation of the same config (to a rounding tie) and stays near fp32.
    Without the option they stay fp32. The ONNX QDQ export writes both products' inputs
    quantized: onnxruntime computes the simulation."""
    from tvm_mpq.api import config_for_rate
    from tvm_mpq.compiler.validate import keep_unsupported_fp32
    import onnxruntime

    from tvm_mpq.export.fp32_onnx import fp32_onnx
    from tvm_mpq.export.onnx_qdq import build_qdq_onnx
    from tvm_mpq.frontends.torch_frontend import from_module
    from tvm_mpq.metrics.task_metrics import output_sqnr_db

    rng = np.random.default_rng(0)
    feeds = [{"x": rng.normal(size=(1, 20, 78)).astype(np.float32)} for _ in range(4)]
    graph = from_module(_Heads(), {"x": feeds[0]["x"]}, "heads")
    table = build_layer_table(graph)
    products = [layer.name for layer in table if layer.kind == "matmul"]
    config, _ = config_for_rate(graph, feeds, 100, "inorder")
    assert len(products) == 2 and all(config.layers[n].b_act is not None for n in products)
    config = PrecisionConfig.from_json(config.to_json())
    assert keep_unsupported_fp32(PrecisionConfig.from_json(config.to_json()), table) == products
    assert keep_unsupported_fp32(config, table, int8_attention=True) == []
    compiled, simulated = compile_model(graph, config), compile_model(graph, config, simulate=True)
    assert compiled.stats["int8_layers"] == len(table)
    assert compiled.stats["build"]["rules"].get("BatchMatmul", 0) >= 2
    reference = compile_graph(graph)
    for feed in feeds:
        got, sim = compiled.run(feed)[0], simulated.run(feed)[0]
        np.testing.assert_allclose(got, sim, atol=0.02 * float(np.abs(sim).max()))
        assert float(np.mean(np.abs(got - sim) > 1e-5 * float(np.abs(sim).max()))) < 0.01  # (a rounding tie: one code)
    assert output_sqnr_db([compiled.run(f) for f in feeds], [reference.run(f) for f in feeds]) > 25
    exported = build_qdq_onnx(graph, config, fp32_onnx(graph, _Heads().eval()))
    assert set(products) <= set(exported.nodes) and exported.n_act_qdq >= 4
    session = onnxruntime.InferenceSession(exported.model.SerializeToString(), providers=["CPUExecutionProvider"])
    for feed in feeds[:2]:
        sim = simulated.run(feed)[0]
        np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: feed["x"]})[0], sim, atol=1e-4 * float(np.abs(sim).max()))


class _Decoder(torch.nn.Module):
    """A segmentation decoder: transposed convs whose windows overlap and are cropped (kernel 4,
    stride 2, padding 1: the input's zero point reaches border outputs fewer times), that tile
    (kernel 2, stride 2), and that double a map with an output padding (PyTorch's kernel 3,
    stride 2, padding 1, output_padding 1), with batch norms and relus between."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.up1 = torch.nn.ConvTranspose2d(16, 16, 4, stride=2, padding=1)
        self.bn1 = torch.nn.BatchNorm2d(16)
        self.up2 = torch.nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.up3 = torch.nn.ConvTranspose2d(8, 8, 3, stride=2, padding=1, output_padding=1)
        self.head = torch.nn.Conv2d(8, 1, 1)
        with torch.no_grad():
            self.bn1.running_mean.uniform_(-0.5, 0.5)
            self.bn1.running_var.uniform_(0.5, 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.up1(self.stem(x))  # (no relu in front: a signed input, a non-zero zero point)
        y = self.up2(torch.relu(self.bn1(y)))
        y = self.up3(torch.relu(y))
        return self.head(torch.relu(y))


def test_transposed_convs_run_on_integer_kernels_like_their_simulation():
    """A ``conv2d_transpose`` layer int8: uint8 x int8 -> int32 (on the CPU a GEMM of the codes
    and the int32 sum of its shifted blocks), the input zero point's share subtracted per output
    position where windows overlap or are cropped; within one output step of the QDQ simulation
    of the same config, and a grouped transposed conv stays a kind without an integer kernel."""
    from tvm_mpq.frontends.torch_frontend import from_module

    rng = np.random.default_rng(1)
    feeds = [{"x": rng.normal(size=(1, 3, 8, 8)).astype(np.float32)} for _ in range(3)]
    graph = from_module(_Decoder(), feeds[0], "decoder")
    table = build_layer_table(graph)
    assert sorted(layer.kind for layer in table) == ["conv2d", "conv2d"] + ["conv2d_transpose"] * 3
    config = _config(graph, feeds, 100)
    assert all(not lp.is_fp32 for lp in config.layers.values())
    assert config.layers[table.names()[1]].act.zero_point != 0  # the overlapping one's input is signed
    integer, simulated, fp32 = compile_model(graph, config), compile_model(graph, config, simulate=True), compile_graph(graph)
    assert mac_census(integer.mod) == {INT8_MAC: 5}
    kernels = integer.stats["build"]["kernels"]
    assert sum(rule == "MatmulConstWeight" for name, rule in kernels.items() if name.startswith("matmul")) == 3, kernels
    assert not any("conv2d_transpose" in name for name in kernels)
    for feed in feeds:
        ref, got, sim = fp32.run(feed)[0], integer.run(feed)[0], simulated.run(feed)[0]
        assert np.abs(got - sim).max() <= _step(ref)
        assert not np.array_equal(got, ref)
    grouped = from_module(torch.nn.ConvTranspose2d(4, 4, 2, stride=2, groups=2), {"x": np.zeros((1, 4, 8, 8), np.float32)},
                          "grouped")
    assert [layer.kind for layer in build_layer_table(grouped)] == ["grouped_conv2d_transpose"]


def test_mtcnn_rnet_fully_int8_keeps_lfw_accuracy():
    model = get("mtcnn-rnet")
    graph = model.build_graph()
    config = _config(graph, model.calibration(16), 100)
    integer = compile_model(graph, config)
    assert integer.n_qdq == 2 and integer.n_qdq_naive == 10
    assert fp32_tensors_between_int_kernels(fuse(integer.mod)) == 0
    feeds, labels = model.labelled(None)
    fp32 = compile_graph(graph)
    acc_fp32 = np.mean([fp32.run(f)[0].argmax() == y for f, y in zip(feeds, labels)])
    acc_int8 = np.mean([integer.run(f)[0].argmax() == y for f, y in zip(feeds, labels)])
    assert acc_int8 >= acc_fp32 - 0.02, (acc_fp32, acc_int8)


def test_cli_compile_writes_a_library_that_loads_and_runs(tmp_path):
    out = tmp_path / "rnet.so"
    proc = subprocess.run([sys.executable, "-m", "tvm_mpq.cli", "compile", "mtcnn-rnet", "--rate", "100",
                           "--calib-size", "8", "--target", "x86", "-o", str(out), "--cache-dir", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "n_qdq 2" in proc.stdout
    config = PrecisionConfig.load(tmp_path / "rnet.config.json")
    assert config.provenance["n_qdq"] == 2 and not config.fp32_layers()
    lib = tvm.runtime.load_module(str(out))
    vm = relax.VirtualMachine(lib, tvm.cpu())
    model = get("mtcnn-rnet")
    graph = model.build_graph()
    feed = model.calibration(1)[0]
    got = vm["main"](tvm.runtime.tensor(feed["x"]))[0].numpy()
    expected = compile_model(graph, config).run(feed)[0]
    np.testing.assert_array_equal(got, expected)
    bad = tmp_path / "bad.json"
    data = config.to_json()
    data["layers"]["conv1"] = {"w_bits": 8, "a_bits": 16}
    import json

    bad.write_text(json.dumps(data))
    proc = subprocess.run([sys.executable, "-m", "tvm_mpq.cli", "compile", "mtcnn-rnet", "--config", str(bad),
                           "-o", str(tmp_path / "bad.so")], capture_output=True, text=True)
    assert proc.returncode == 2 and "at most 8-bit" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "bad.so").exists()
    # cross-compiling for a VNNI server: the int8 kernels use vpdpbusd (compile only here)
    vnni = tmp_path / "rnet_spr.so"
    proc = subprocess.run([sys.executable, "-m", "tvm_mpq.cli", "compile", "mtcnn-rnet", "--config",
                           str(tmp_path / "rnet.config.json"), "--mcpu", "sapphirerapids", "--print-ir", "-o", str(vnni)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for name in config.layers:  # --print-ir: each layer's annotation in the module the lowering reads
        assert any("R.mpq.precision(" in line and f'layer="{name}"' in line and "w_bits=8" in line
                   for line in proc.stdout.splitlines()), name
    asm = subprocess.run(["objdump", "-d", str(vnni)], capture_output=True, text=True, check=True).stdout
    assert "vpdpbusd" in asm
    proc = subprocess.run([sys.executable, "-m", "tvm_mpq.cli", "compile", "mtcnn-rnet", "--config",
                           str(tmp_path / "rnet.config.json"), "--mcpu", "pentium9", "-o", str(tmp_path / "x.so")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "--mcpu 'pentium9' is not an x86-64 CPU" in proc.stderr


def test_every_quantized_tensor_matches_qdq_when_fed_the_same_inputs(small_graph, small_feeds, small_int8):
    from tvm_mpq.compiler.agreement import layerwise_agreement

    agreement = layerwise_agreement(small_graph, small_int8[0], small_feeds[:2])
    assert len(agreement.tensors) >= 4  # input, dw input, pw input, fc input
    assert agreement.max_code_diff <= 1
    assert agreement.differing_fraction < 1e-3


# -- the precision decision in the IR ----------------------------------------------------------

@relax.transform.function_pass(opt_level=0, name="KeepFp32")
class KeepFp32:
    """A user's pass: keep one layer fp32 by editing its precision annotation."""

    def __init__(self, layer: str):
        self.layer = layer

    def transform_function(self, func, mod, ctx):
        return map_annotations(func, lambda a: a.as_fp32() if a.layer == self.layer else a)


def test_editing_one_annotation_in_a_user_pass_changes_the_compiled_model(small_graph, small_feeds, small_int8,
                                                                          tmp_path):
    """Print the annotated module and find every int8 layer by name; flip one to fp32 in a pass
    of one's own; the compiled model is the one the same decision given as JSON compiles to."""
    config, integer, _ = small_int8
    annotated = tvm.transform.Sequential(precision_passes(small_graph, config)[:-1])(small_graph.mod)
    text = annotated.script()
    for name in config.layers:
        line = next(line for line in text.splitlines() if f'layer="{name}"' in line)
        assert "R.mpq.precision(" in line and "w_bits=8" in line and "a_bits=8" in line
    pipeline = insert_after(compile_pipeline(small_graph, config), "AnnotatePrecision", KeepFp32("dw"))
    edited = compile_model(small_graph, config, pipeline=pipeline)
    data = config.to_json()
    data["layers"]["dw"] = "fp32"
    (tmp_path / "dw_fp32.json").write_text(__import__("json").dumps(data))
    reference = compile_model(small_graph, PrecisionConfig.load(tmp_path / "dw_fp32.json"))
    assert edited.stats["int8_layers"] == reference.stats["int8_layers"] == 3 < integer.stats["int8_layers"]
    assert edited.n_qdq == reference.n_qdq != integer.n_qdq
    assert mac_census(edited.mod) == {INT8_MAC: 3, "float32 x float32 -> float32": 1}
    for feed in small_feeds:
        got = edited.run(feed)[0]
        np.testing.assert_array_equal(got, reference.run(feed)[0])
        assert not np.array_equal(got, integer.run(feed)[0])


GOLDEN = __import__("pathlib").Path(__file__).parent / "data" / "lowering_golden"


@pytest.mark.parametrize("model", ["small", "mtcnn-rnet"])
def test_lowering_from_annotations_is_the_position_keyed_lowering(model, small_graph):
    """The module lowered from annotations is, structurally (constants included), the one the
    lowering computed before annotations existed (plan keyed by MAC position, commit e1022b0),
    for configs fixed in tests/data/lowering_golden, at both stages, integer and simulated (the
    small model's 60% config at A->C: since its fp32 layers' batch norms are folded too)."""
    import json

    import tvm_ffi

    from tvm_mpq.compiler.pipeline import lower_model

    graph = small_graph if model == "small" else get(model).build_graph()
    hashes = json.loads((GOLDEN / "lowered_hashes.json").read_text())["hashes"]
    for rate in (100, 60):
        config = PrecisionConfig.load(GOLDEN / f"{model}_{rate}.config.json")
        for key, stage, simulate in (("AC_int", "A->C", False), ("AC_sim", "A->C", True), ("A_int", "A", False)):
            mod, _ = lower_model(graph, config, stage, simulate)
            main = mod["main"]
            for attr in [k for k in main.attrs.keys() if k.startswith("mpq_")]:
                main = main.without_attr(attr)
            mod["main"] = main
            assert str(tvm_ffi.structural_hash(mod)) == hashes[f"{model}_{rate}_{key}"], (model, rate, key)


def test_ir_stages_by_name_or_letter(small_graph, small_int8):
    """``source`` / ``source->folded`` / ``folded`` are the letters ``A`` / ``A->C`` / ``C``."""
    from tvm_mpq.compiler.pipeline import lower_model
    from tvm_mpq.types import parse_stage, stage_name

    for name, letter in (("source", "A"), ("source->folded", "A->C"), ("folded", "C")):
        assert parse_stage(name) == parse_stage(letter) == letter and stage_name(letter) == name
    by_name, by_letter = (lower_model(small_graph, small_int8[0], stage)[1] for stage in ("source", "A"))
    assert {k: v for k, v in by_name.items() if k != "stage"} == {k: v for k, v in by_letter.items() if k != "stage"}
    with pytest.raises(MpqError, match="source \\(A\\), source->folded \\(A->C\\), folded \\(C\\)"):
        parse_stage("B")
