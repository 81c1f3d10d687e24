"""No traceback from the CLI: every bad input exits 2 with one line and leaves no output behind.

Each case runs the real ``tvm-mpq`` (its ``main()`` in this process, with the file descriptors
captured so that anything TVM or a library prints is seen too; a few through ``python -m
tvm_mpq.cli``) on the zoo's smallest model or a tiny ONNX file built here, then checks exit code
2, exactly one stderr line ``tvm-mpq: error: ...`` with the expected words, no ``Traceback``,
and that no file or directory appeared.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tvm_mpq.cli import main
from tvm_mpq.cli.failures import StageFailure, error_line, mentioned_layer, stage
from tvm_mpq.output_files import STAGING_PREFIX, staged_outputs

MODEL = "mtcnn-rnet"  # the zoo's smallest model: 1x3x24x24, 5 MAC layers


def _tiny_conv(path: Path, weight: np.ndarray) -> Path:
    """A one-conv ONNX model (input ``x`` 1x3x8x8) with ``weight`` as its 4x3x3x3 kernel."""
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], name="conv")
    graph = helper.make_graph([node], "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [numpy_helper.from_array(weight, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """Bad (and a few good) input files, in a directory of their own."""
    d = tmp_path_factory.mktemp("inputs")
    weight = np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32)
    good = _tiny_conv(d / "tiny.onnx", weight)
    truncated = d / "truncated.onnx"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = d / "text.onnx"
    text.write_text("this is a text file, not a model\n")
    nan_weight = weight.copy()
    nan_weight[1, 2, 0, 0] = np.nan
    (d / "notes.pt2").write_text("not a torch.export archive\n")
    (d / "bad.json").write_text('{"format": "tvm-mpq/precision-config", "layers": {')
    nan_scale = {"format": "tvm-mpq/precision-config", "version": 1, "model": MODEL,
                 "layers": {"conv1": {"w_bits": 8, "a_bits": 8, "act": {"scale": float("nan"), "zero_point": 0,
                                                                         "bits": 8}}}}
    (d / "nan_scale.json").write_text(json.dumps(nan_scale))  # json writes NaN; strict readers would not
    rounding = {"format": "tvm-mpq/precision-config", "version": 1, "model": MODEL,
                "layers": {"conv1": {"w_bits": 8, "a_bits": 8, "weight_rounding": [0, 1]}}}
    (d / "rounding.json").write_text(json.dumps(rounding))
    calib = np.random.default_rng(1).normal(size=(4, 1, 3, 24, 24)).astype(np.float32)
    calib[2, 0, 1, 5, 5] = np.inf
    np.savez(d / "inf_calib.npz", x=calib)
    (d / "a_file").write_text("a file where a directory is expected\n")
    double = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "double",
                               [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [1, 4])],
                               [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [1, 4])])
    onnx.save(helper.make_model(double, opset_imports=[helper.make_opsetid("", 17)]), str(d / "double.onnx"))
    inf_weight = weight.copy()
    inf_weight[0, 0, 0, 0] = np.inf
    relu = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                             [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                             [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    onnx.save(helper.make_model(relu, opset_imports=[helper.make_opsetid("", 17)]), str(d / "relu.onnx"))
    bad_conv = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], "badconv",
                                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])],
                                 [numpy_helper.from_array(np.ones((4, 4, 3, 3), np.float32), "w")])  # 4 input channels
    onnx.save(helper.make_model(bad_conv, opset_imports=[helper.make_opsetid("", 17)]), str(d / "badconv.onnx"))
    table = numpy_helper.from_array(np.random.default_rng(2).normal(size=(100, 16)).astype(np.float32), "E")
    lookup = helper.make_graph([helper.make_node("Gather", ["E", "ids"], ["e"]),
                                helper.make_node("MatMul", ["e", "m"], ["y"], name="fc")], "lookup",
                               [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 8])],
                               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 4])],
                               [table, numpy_helper.from_array(np.ones((16, 4), np.float32), "m")])
    onnx.save(helper.make_model(lookup, opset_imports=[helper.make_opsetid("", 17)]), str(d / "lookup.onnx"))
    np.savez(d / "ids_out_of_range.npz", ids=np.full((2, 1, 8), 1000, np.int64))
    np.savez(d / "x_calib.npz", x=np.zeros((2, 1, 3, 8, 8), np.float32))
    act = {"scale": 0.02, "zero_point": 128, "bits": 8}
    config = {"format": "tvm-mpq/precision-config", "version": 1, "model": "tiny"}
    scales8 = (np.abs(weight).reshape(4, -1).max(axis=1) / 127).tolist()
    for key, layer in (("w3_scales8", {"w_bits": 3, "a_bits": 8, "act": act, "weight_scales": scales8}),
                       ("huge_scale", {"w_bits": 8, "a_bits": 8, "act": {**act, "scale": 1e300}}),
                       ("fractional_zero_point", {"w_bits": 8, "a_bits": 8, "act": {**act, "zero_point": 3.7}}),
                       ("a4_act8", {"w_bits": 8, "a_bits": 4, "act": act})):
        (d / f"{key}.json").write_text(json.dumps({**config, "layers": {"conv": layer}}))
    (d / "provenance_list.json").write_text(json.dumps({**config, "provenance": [], "layers": {"conv": "fp32"}}))
    (d / "transforms_list.json").write_text(json.dumps({**config, "provenance": {"graph_transforms": []},
                                                        "layers": {"conv": "fp32"}}))
    half_pair = {"graph_transforms": {"cross_layer_equalization": {"pairs": [{"first": "conv"}]}}}
    (d / "pair_without_scales.json").write_text(json.dumps({**config, "provenance": half_pair, "layers": {"conv": "fp32"}}))
    import torch

    torch.save(torch.nn.Conv2d(3, 4, 3).state_dict(), d / "weights.pt")
    empty = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], "empty",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [0, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [0, 4, 6, 6])],
                              [numpy_helper.from_array(weight, "w")])
    onnx.save(helper.make_model(empty, opset_imports=[helper.make_opsetid("", 17)]), str(d / "empty_batch.onnx"))
    images = d / "images"
    images.mkdir()
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / "black.png")
    return {"double": d / "double.onnx", "tiny": good, "truncated": truncated, "text": text, "nan_weight": _tiny_conv(d / "nan.onnx", nan_weight),
            "pt2": d / "notes.pt2", "bad_json": d / "bad.json", "nan_scale": d / "nan_scale.json",
            "rounding": d / "rounding.json",
            "inf_calib": d / "inf_calib.npz", "file": d / "a_file", "dir": d,
            "inf_weight": _tiny_conv(d / "inf.onnx", inf_weight), "relu": d / "relu.onnx",
            "badconv": d / "badconv.onnx", "lookup": d / "lookup.onnx", "ids_oob": d / "ids_out_of_range.npz",
            "x_calib": d / "x_calib.npz", "images": images, "provenance_list": d / "provenance_list.json",
            "transforms_list": d / "transforms_list.json", "pair_without_scales": d / "pair_without_scales.json",
            "state_dict": d / "weights.pt",
            "empty_batch": d / "empty_batch.onnx",
            **{key: d / f"{key}.json" for key in ("w3_scales8", "huge_scale", "fractional_zero_point", "a4_act8")}}


Args = Callable[[dict[str, Path], Path], list[str]]
LONG_STEM = "r" * 246  # r...r.json fits in 255 bytes, r...r.rate50.json does not

# (id, arguments from (inputs, output directory), words the error line must contain)
CASES: list[tuple[str, Args, str]] = [
    # output paths, checked before any work
    ("output-under-a-file", lambda i, o: ["compile", MODEL, "--rate", "50", "-o", str(i["file"] / "sub" / "x.so")],
     "is not a directory"),
    ("output-is-a-directory", lambda i, o: ["compile", MODEL, "--rate", "50", "-o", str(i["dir"])], "is a directory"),
    ("output-dir-not-writable", lambda i, o: ["compile", MODEL, "--rate", "50", "-o", "/proc/tvm-mpq-test/x.so"],
     "cannot write in '/proc'"),
    ("output-name-too-long", lambda i, o: ["compile", MODEL, "--rate", "50", "-o", str(o / ("x" * 300 + ".so"))],
     "longer than"),
    ("cache-dir-is-a-file", lambda i, o: ["analyze", MODEL, "--cache-dir", str(i["file"]), "-o", str(o / "s.json")],
     "--cache-dir"),
    ("tuning-db-under-a-file", lambda i, o: ["compile", MODEL, "--rate", "0", "--tuning-db", str(i["file"] / "db"),
                                             "-o", str(o / "x.so")], "--tuning-db"),
    ("config-out-is-a-directory", lambda i, o: ["analyze", MODEL, "--rate", "50", "--config-out", str(i["dir"]),
                                                "-o", str(o / "s.json")], "is a directory"),
    # options and targets
    ("unknown-target", lambda i, o: ["compile", MODEL, "--rate", "50", "--target", "riscv", "-o", str(o / "x.so")],
     "unknown --target 'riscv'"),
    ("usage-error", lambda i, o: ["compile", MODEL, "--rate", "fifty", "-o", str(o / "x.so")],
     "invalid float value: 'fifty'"),
    ("rate-out-of-range", lambda i, o: ["compile", MODEL, "--rate", "150", "-o", str(o / "x.so")], "outside 0..100"),
    ("measured-bias-without-bias-correction", lambda i, o: ["compile", MODEL, "--rate", "50", "--measured-bias",
                                                            "--no-bias-correction", "-o", str(o / "x.so")],
     "--measured-bias refines bias correction"),
    ("bad-input-shape", lambda i, o: ["analyze", MODEL, "--input-shape", "x:1by3", "-o", str(o / "s.json")],
     "not NAME:DIMS"),
    ("wrong-input-shape", lambda i, o: ["analyze", MODEL, "--input-shape", "x:1x3x8x8", "-o", str(o / "s.json")],
     "takes (1, 3, 24, 24)"),
    ("export-onnx-to-so", lambda i, o: ["export-onnx", MODEL, "--rate", "50", "-o", str(o / "x.so")],
     "must be an .onnx file"),
    # corrupt or missing inputs
    ("missing-model", lambda i, o: ["analyze", str(i["dir"] / "nowhere.onnx"), "-o", str(o / "s.json")],
     "neither a file nor a zoo model"),
    ("truncated-onnx", lambda i, o: ["compile", str(i["truncated"]), "--rate", "50", "-o", str(o / "x.so")],
     "not a valid ONNX model"),
    ("text-named-onnx", lambda i, o: ["analyze", str(i["text"]), "-o", str(o / "s.json")], "not a valid ONNX model"),
    ("text-named-pt2", lambda i, o: ["analyze", str(i["pt2"]), "-o", str(o / "s.json")], "not a zip file"),
    ("nan-weights", lambda i, o: ["analyze", str(i["nan_weight"]), "-o", str(o / "s.json")],
     "NaN values in parameter 'w' (layer conv)"),
    ("float64-input", lambda i, o: ["compile", str(i["double"]), "--rate", "0", "-o", str(o / "d.so")],
     "input 'x' is double (ONNX element type 11); the inputs tvm-mpq takes are"),
    ("missing-config", lambda i, o: ["compile", MODEL, "--config", str(i["dir"] / "none.json"), "-o", str(o / "x.so")],
     "does not exist"),
    ("config-not-json", lambda i, o: ["compile", MODEL, "--config", str(i["bad_json"]), "-o", str(o / "x.so")],
     "is not JSON"),
    ("config-nan-scale", lambda i, o: ["bops", MODEL, "--config", str(i["nan_scale"])], "invalid activation qparams"),
    ("config-weight-rounding-not-text", lambda i, o: ["bops", MODEL, "--config", str(i["rounding"])],
     "weight_rounding must be a string"),
    ("missing-calib", lambda i, o: ["analyze", MODEL, "--calib", str(i["dir"] / "none"), "-o", str(o / "s.json")],
     "does not exist"),
    ("inf-calib", lambda i, o: ["analyze", MODEL, "--calib", str(i["inf_calib"]), "-o", str(o / "s.json")],
     "NaN or Inf"),
    # found by a fuzzing pass over the CLI (2026-12-05): each had exited 0 with a wrong or ignored
    # result, or with more than one line
    ("inf-weights", lambda i, o: ["compile", str(i["inf_weight"]), "--rate", "100", "-o", str(o / "x.so")],
     "Inf values in parameter 'w' (layer conv)"),
    ("no-mac-layers", lambda i, o: ["compile", str(i["relu"]), "--rate", "50", "-o", str(o / "x.so")],
     "has no conv/matmul layers"),
    ("import-failure-is-one-line", lambda i, o: ["compile", str(i["badconv"]), "--rate", "100", "-o", str(o / "x.so")],
     "cannot import ONNX model 'badconv'"),
    ("lookup-indices-outside-the-table", lambda i, o: ["compile", str(i["lookup"]), "--calib", str(i["ids_oob"]),
                                                       "--rate", "100", "-o", str(o / "x.so")],
     "input 'ids' holds indices 1000..1000, but the table it indexes has 100 rows"),
    ("weight-scales-of-other-bits", lambda i, o: ["compile", str(i["tiny"]), "--config", str(i["w3_scales8"]),
                                                  "-o", str(o / "x.so")], "scales made for another bit width"),
    ("activation-scale-out-of-range", lambda i, o: ["bops", str(i["tiny"]), "--config", str(i["huge_scale"])],
     "scales must be finite, 1e-30..1e+30"),
    ("fractional-zero-point", lambda i, o: ["bops", str(i["tiny"]), "--config", str(i["fractional_zero_point"])],
     "zero_point 3.7 is not a whole number"),
    ("act-bits-not-a-bits", lambda i, o: ["bops", str(i["tiny"]), "--config", str(i["a4_act8"])],
     "a_bits 4 but its \"act\" quantizer is for 8 bits"),
    ("config-out-is-the-report", lambda i, o: ["analyze", MODEL, "--rate", "50", "-o", str(o / "s.json"),
                                               "--config-out", str(o / "s.json")], "the sensitivity report's path"),
    ("config-out-without-rate", lambda i, o: ["analyze", MODEL, "-o", str(o / "s.json"), "--config-out",
                                              str(o / "c.json")], "give --rate too"),
    ("g-not-a-number", lambda i, o: ["compile", MODEL, "--rate", "50", "--g", "nan", "-o", str(o / "x.so")],
     "needs a finite g > 1"),
    ("input-shape-twice", lambda i, o: ["analyze", MODEL, "--input-shape", "x:1x3x24x24", "--input-shape",
                                        "x:2x3x24x24", "-o", str(o / "s.json")], "gives input 'x' twice"),
    ("rpc-not-host-port", lambda i, o: ["compile", MODEL, "--rate", "0", "--tune-trials", "1", "--rpc", "nohost",
                                        "-o", str(o / "x.so")], "--rpc 'nohost' is not HOST:PORT"),
    ("std-zero", lambda i, o: ["analyze", str(i["tiny"]), "--calib", str(i["images"]), "--std", "0", "0", "0",
                               "-o", str(o / "s.json")], "--std 0 0 0: the values must be finite and nonzero"),
    ("mean-with-npz", lambda i, o: ["analyze", str(i["tiny"]), "--calib", str(i["x_calib"]), "--mean", "0.5",
                                    "-o", str(o / "s.json")], "--mean / --std normalize the images of --calib DIR"),
    ("provenance-not-an-object", lambda i, o: ["bops", str(i["tiny"]), "--config", str(i["provenance_list"])],
     "\"provenance\" must be an object"),
    ("graph-transforms-not-an-object", lambda i, o: ["bops", str(i["tiny"]), "--config", str(i["transforms_list"])],
     "\"graph_transforms\" must be an object"),
    ("equalization-pair-without-scales", lambda i, o: ["compile", str(i["tiny"]), "--config", str(i["pair_without_scales"]),
                                                       "-o", str(o / "x.so")], "equalization record is malformed"),
    ("state-dict-as-model", lambda i, o: ["analyze", str(i["state_dict"]), "-o", str(o / "s.json")],
     "is a torch.save file (weights or a pickled module), not a model graph"),
    ("batch-of-zero", lambda i, o: ["analyze", str(i["empty_batch"]), "-o", str(o / "s.json")],
     "has a dimension of size 0 (0x3x8x8)"),
    # fails after the report was written (staged): its derived config name is too long to create
    ("failure-after-first-output", lambda i, o: ["analyze", MODEL, "--method", "weight-sqnr", "--rate", "50",
                                                 "--calib-size", "2", "-o", str(o / f"{LONG_STEM}.json")],
     "write: OSError: [Errno 36] File name too long"),
]


def _tree(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


@pytest.mark.parametrize("make_args,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line_and_no_output(make_args: Args, expected: str, inputs, tmp_path, capfd,
                                                       monkeypatch):
    monkeypatch.setenv("TVM_MPQ_NO_PROGRESS", "1")
    monkeypatch.setenv("TVM_MPQ_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    out.mkdir()
    args = make_args(inputs, out)
    if any(a.startswith("/proc/") for a in args) and not Path("/proc/self").is_dir():
        pytest.skip("no /proc on this system")
    inputs_before = _tree(inputs["dir"])
    rc = main(args)
    captured = capfd.readouterr()
    lines = captured.err.strip().splitlines()
    assert rc == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("tvm-mpq: error: "), captured.err
    assert expected in lines[0], lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert _tree(out) == set(), f"left behind: {_tree(out)}"
    assert _tree(inputs["dir"]) == inputs_before
    assert not Path("/proc/tvm-mpq-test").exists()


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TVM_MPQ_NO_PROGRESS": "1"}
    return subprocess.run([sys.executable, "-m", "tvm_mpq.cli", *args], capture_output=True, text=True,
                          timeout=300, env=env)


def test_the_real_entry_point_exits_2_with_one_line(tmp_path):
    """An exception no check foresaw (here the OS refusing a port) as one line naming the command."""
    result = _run_cli("rpc-server", "--port", "70000")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tvm-mpq: error: rpc-server: "), result.stderr
    assert "port" in lines[0] and "rerun with --debug" in lines[0]
    assert "Traceback" not in result.stderr


def test_debug_prints_the_full_traceback(inputs, tmp_path):
    result = _run_cli("--debug", "analyze", str(inputs["text"]), "-o", str(tmp_path / "s.json"))
    assert result.returncode == 2
    assert result.stderr.startswith("Traceback") and "MpqError: " in result.stderr
    assert "not a valid ONNX model" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "s.json").exists()


def test_an_unexpected_tvm_error_names_the_stage_and_the_op():
    """A real TVM failure (a broadcast of incompatible shapes) inside a stage: one line, op named."""
    from tvm import relax

    x = relax.Var("x", relax.TensorType((1, 2, 3), "float32"))
    y = relax.Var("y", relax.TensorType((4,), "float32"))
    with pytest.raises(StageFailure) as failure, stage("compile"):
        relax.BlockBuilder().normalize(relax.op.add(x, y))
    line = error_line(failure.value)
    assert line.startswith("tvm-mpq: error: compile: ValueError: In relax.add, the first input shape")
    assert "not broadcastable" in line and "ir.Op(" not in line
    assert line.endswith("; try --no-kernels, or a lower --rate, to narrow it down; rerun with --debug for the full "
                         "traceback")
    assert "\n" not in line and len(line) < 500


def test_the_layer_a_message_mentions_is_named():
    message = ("Mismatched /model.22/Constant_67_output_0.ndim on argument #1 when calling: "
               "divide(lv370: Tensor([1, 2, 2100], float32), /model.22/Constant_67_output_0: Tensor([], float32))")
    layers = {"/model.22/Constant_67_output_0": "/model.22/Div", "/model.2/Constant_6": "/model.2/Mul"}
    assert mentioned_layer(message, layers) == "/model.22/Div"
    assert mentioned_layer("KeyError: 'fcompile'", {"fc": "fc"}) is None  # whole names only
    with pytest.raises(StageFailure) as failure, stage("calibrate", layers):
        raise ValueError(message)
    assert str(failure.value).endswith("(layer /model.22/Div)")


def test_staged_outputs_move_in_together_or_not_at_all(tmp_path):
    final = tmp_path / "new" / "deeper" / "model.so"
    with pytest.raises(RuntimeError), staged_outputs() as outputs:
        outputs.path(final).write_bytes(b"half a library")
        outputs.path(final.with_suffix(".config.json")).write_text("{}")
        raise RuntimeError("the export failed")
    assert _tree(tmp_path) == set()  # the staged files and the directories made for them are gone
    (tmp_path / "old.json").write_text("old")
    with staged_outputs() as outputs:
        staged = outputs.path(final)
        staged.write_bytes(b"library")
        sibling = staged.with_suffix(".compile.json")  # a writer's own sibling moves along
        sibling.write_text("{}")
        outputs.path(tmp_path / "old.json").write_text("new")
        assert not final.exists() and outputs.final(sibling) == final.with_suffix(".compile.json")
    assert final.read_bytes() == b"library" and final.with_suffix(".compile.json").exists()
    assert (tmp_path / "old.json").read_text() == "new"
    assert not [p for p in tmp_path.rglob(f"{STAGING_PREFIX}*")]


def test_cache_files_are_replaced_whole_while_another_process_reads_them(tmp_path):
    """The calibration cache (and the corpus / stub-driver caches) go through ``write_atomically``:
    a reader in another process sees the old file or the new one, never a truncated one, and a
    write that fails leaves the old file and no temporary beside it."""
    from tvm_mpq.output_files import write_atomically

    path = tmp_path / "calibration" / "model-key.json"
    big = json.dumps({"ranges": {f"v{i}": [i, i + 1] for i in range(20000)}})
    write_atomically(path, big)
    reader = subprocess.Popen([sys.executable, "-c", f"""
import json, sys, time
from pathlib import Path
path, end, reads = Path({str(path)!r}), time.monotonic() + 3, 0
while time.monotonic() < end:
    json.loads(path.read_text()); reads += 1
print(reads)
"""], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for k in range(200):  # rewrite it over and over while the other process parses it
        write_atomically(path, big if k % 2 else big.replace("v1", "w1"))
    out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err[-2000:]  # a JSONDecodeError here: it read half a file
    assert int(out) > 0
    with pytest.raises(TypeError):
        write_atomically(path, None)  # type: ignore[arg-type]  # fails mid-write
    assert json.loads(path.read_text()) and [p.name for p in path.parent.iterdir()] == [path.name]
