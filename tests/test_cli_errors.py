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
    return {"double": d / "double.onnx", "tiny": good, "truncated": truncated, "text": text, "nan_weight": _tiny_conv(d / "nan.onnx", nan_weight),
            "pt2": d / "notes.pt2", "bad_json": d / "bad.json", "nan_scale": d / "nan_scale.json",
            "rounding": d / "rounding.json",
            "inf_calib": d / "inf_calib.npz", "file": d / "a_file", "dir": d}


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
