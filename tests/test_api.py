"""``tvm_mpq.quantize``: model + rate in, precision config + compiled executable out, in one call."""

from __future__ import annotations

import numpy as np
import pytest

import tvm_mpq
from tvm_mpq.errors import MpqError
from tvm_mpq.runtime.executor import compile_graph


def test_quantize_returns_the_config_and_a_running_executable(small_graph, small_feeds, tmp_path):
    q = tvm_mpq.quantize(small_graph, rate=100, method="inorder", target="x86", calib=small_feeds)
    assert not q.config.fp32_layers()
    assert q.config.provenance["requested_rate"] == 100 and q.config.provenance["method"] == "inorder"
    assert q.compiled.stats["int8_layers"] == len(q.config.layers)
    assert q.config.provenance["bias_correction"] is True  # the default, as on the command line
    assert q.compiled.stats["bias_corrected"] == len(q.config.layers)
    assert q.executable is q.compiled.executable
    fp32 = compile_graph(small_graph).run(small_feeds[0])
    out = q.run(small_feeds[0])
    assert out[0].shape == fp32[0].shape
    assert np.corrcoef(out[0].ravel(), fp32[0].ravel())[0, 1] > 0.9
    assert q.export(tmp_path / "m.so").is_file()


def test_quantize_at_rate_zero_is_the_fp32_model(small_graph, small_feeds):
    q = tvm_mpq.quantize(small_graph, rate=0, method="inorder", calib=small_feeds)
    assert len(q.config.fp32_layers()) == len(q.config.layers)
    assert q.compiled.stats["int8_layers"] == 0


@pytest.mark.parametrize("kwargs, message", [
    (dict(rate=150), "outside 0..100"),
    (dict(rate=50, target="riscv"), "riscv"),
    (dict(rate=50, method="nope"), "nope"),
])
def test_quantize_rejects_what_the_caller_can_fix(small_graph, small_feeds, kwargs, message):
    with pytest.raises(MpqError, match=message):
        tvm_mpq.quantize(small_graph, calib=small_feeds, **kwargs)
