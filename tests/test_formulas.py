"""Hand-computed checks of the formulas of docs/design.md: SQNR, MSE, quantizers, BOPs, rates, Alg. 2."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tvm_mpq.allocation import FP32, Precision, allocate_by_rate, bops, bops_ratio, bops_reduction_rate
from tvm_mpq.errors import MpqError
from tvm_mpq.graph.layer_table import Layer, LayerTable
from tvm_mpq.metrics import SQNR_CAP_DB, make_metric, mse, sqnr_db
from tvm_mpq.quantization import act_qparams, fake_quant_activation, fake_quant_weight, weight_scales
from tvm_mpq.sensitivity.layer_metrics import LayerMetrics
from tvm_mpq.sensitivity.quantunev2 import quantunev2_rank, sqnr_deltas


def test_sqnr_and_mse_hand_values():
    x = np.array([3.0, 4.0])
    x_hat = np.array([3.0, 3.0])  # signal 25, noise 1
    assert sqnr_db(x, x_hat) == pytest.approx(10 * math.log10(25.0))
    assert mse(x, x_hat) == pytest.approx(0.5)
    assert sqnr_db(x, x) == SQNR_CAP_DB
    cos = make_metric("cosine")
    cos.update(np.array([1.0, 0.0]), np.array([1.0, 1.0]))
    assert cos.value() == pytest.approx(1 / math.sqrt(2))


def test_kl_counts_values_on_bin_edges_and_outside_the_first_range_like_explicit_edges():
    """The KL metric bins by count and range; its counts are those of the 256 explicit equal bins
    over the first batch's range, values on an edge in the bin above it, values outside clipped
    into the edge bins."""
    x = np.arange(-128, 129, dtype=np.float32) / 32  # every one of the 257 edges of [-4, 4]
    later = np.concatenate([x, [-9.0, 9.0, 4.0, -4.0]]).astype(np.float32)
    x_hat = (x + 0.01).astype(np.float32)
    kl = make_metric("kl")
    kl.update(x, x_hat)
    kl.update(later, later[::-1].copy())
    edges = np.linspace(-4.0, 4.0, 257)
    p = np.histogram(x, edges)[0] + np.histogram(np.clip(later, -4, 4), edges)[0]
    q = np.histogram(np.clip(x_hat, -4, 4), edges)[0] + np.histogram(np.clip(later[::-1], -4, 4), edges)[0]
    assert p[0] == 4 and p[-1] == 6  # -4 three times, -9 clipped; 127/32 twice, 4 three times, 9 clipped
    p, q = p / p.sum() + 1e-10, q / q.sum() + 1e-10
    assert kl.value() == pytest.approx(float(np.sum(p * np.log(p / q))), rel=1e-12)


def test_streaming_sqnr_equals_one_shot():
    rng = np.random.default_rng(1)
    x, n = rng.normal(size=1000), rng.normal(scale=0.1, size=1000)
    m = make_metric("sqnr_db")
    for part in range(4):
        m.update(x[part * 250:(part + 1) * 250], (x + n)[part * 250:(part + 1) * 250])
    assert m.value() == pytest.approx(sqnr_db(x, x + n))


def test_weight_quantizer_symmetric_per_channel():
    w = np.array([[1.27, -0.5, 0.0], [0.1, 0.2, -0.254]], np.float32)
    s = weight_scales(w, 8, channel_axis=0)
    np.testing.assert_allclose(s, [1.27 / 127, 0.254 / 127], rtol=1e-6)
    q = fake_quant_weight(w, 8, 0)
    assert np.abs(q - w).max() <= s.max() / 2 + 1e-7
    # 2-bit: levels {-1, 0, 1} x scale
    q2 = fake_quant_weight(w, 2, 0)
    np.testing.assert_allclose(q2[0], [1.27, 0.0, 0.0], atol=1e-6)


def test_activation_quantizer_asymmetric_uint8():
    qp = act_qparams(-1.0, 3.0, 8)
    assert qp.scale == pytest.approx(4.0 / 255)
    assert qp.zero_point == 64  # round(1 / (4/255)) = round(63.75)
    x = np.array([-1.0, 0.0, 3.0, 10.0], np.float32)
    y = fake_quant_activation(x, qp)
    assert y[1] == 0.0  # zero is exact
    assert y[3] == pytest.approx((255 - 64) * qp.scale)  # clipped at the top
    # all-positive range is widened to contain 0
    assert act_qparams(2.0, 4.0, 8).zero_point == 0


def _table(macs: list[int]) -> LayerTable:
    layers = [Layer(name=f"l{i}", kind="conv2d", var=f"v{i}", index=i, macs=m, data_var=f"d{i}", weight_var="",
                    weight_param=f"w{i}", weight_shape=(1,), channel_axis=0, output_shape=(1,),
                    producers=[f"l{i - 1}"] if i else [])
              for i, m in enumerate(macs)]
    return LayerTable(layers)


def test_bops_and_rates_hand_values():
    table = _table([100, 300])
    int8 = Precision(8, 8)
    assert bops(table, {"l0": FP32, "l1": FP32}) == 400 * 1024
    assert bops(table, {"l0": int8, "l1": FP32}) == 100 * 64 + 300 * 1024
    assert bops_reduction_rate(table, {"l0": FP32, "l1": FP32}) == 0.0
    assert bops_reduction_rate(table, {"l0": int8, "l1": int8}) == 100.0
    # returning l0 (25% of MACs) to fp32 keeps 75% of the reduction
    assert bops_reduction_rate(table, {"l0": FP32, "l1": int8}) == pytest.approx(75.0)
    assert bops_ratio(table, {"l0": int8, "l1": int8}) == pytest.approx(64 / 1024)


def test_allocation_keeps_a_prefix_of_the_list_fp32():
    table = _table([100, 300, 100, 500])  # total 1000
    alloc = allocate_by_rate(table, ["l2", "l0", "l3", "l1"], 80.0)
    # l2 (10%) and l0 (10%) fit (rate 80%); l3 would drop it to 30%: stop there.
    assert [n for n, p in alloc.items() if p == FP32] == ["l0", "l2"]
    assert bops_reduction_rate(table, alloc) == pytest.approx(80.0)
    assert all(p == Precision(8, 8) for p in allocate_by_rate(table, ["l0", "l1", "l2", "l3"], 100).values())
    assert all(p == FP32 for p in allocate_by_rate(table, ["l0", "l1", "l2", "l3"], 0).values())
    with pytest.raises(MpqError, match="outside 0..100"):
        allocate_by_rate(table, ["l0", "l1", "l2", "l3"], 120)


def test_sqnr_delta_eq16():
    table = _table([1, 1, 1])
    deltas = sqnr_deltas(table, {"l0": 30.0, "l1": 20.0, "l2": 26.0})
    assert deltas["l1"] == pytest.approx(-10.0)
    assert deltas["l2"] == pytest.approx(6.0)
    assert deltas["l0"] == pytest.approx(30.0 - 76.0 / 3)  # no producer: vs the mean


def test_quantunev2_algorithm2_hand_ranking():
    table = _table([1] * 7)
    w = {"l0": 40.0, "l1": 38.0, "l2": 41.0, "l3": 35.0, "l4": 37.0, "l5": 39.0, "l6": 36.0}
    a = {"l0": 30.0, "l1": 25.0, "l2": 27.0, "l3": 26.0, "l4": 24.0, "l5": 28.0, "l6": 20.0}
    mse_ = {n: 0.01 for n in w} | {"l6": 1.0}  # mean 0.151: only l6 exceeds 5x mean
    metrics = {n: LayerMetrics(w[n], 0.0, a[n], mse_[n]) for n in w}
    ranked, details = quantunev2_rank(table, metrics, g=2.0)
    assert ranked[0] == "l6" and details["l6"]["high_mse"]
    # weight deltas (l0 vs the mean 38): l0 2, l1 -2, l2 3, l3 -6, l4 2, l5 2
    #   ascending ranks (ties by index): l3 0, l1 1, l0 2, l4 3, l5 4, l2 5
    # act deltas (l0 vs the mean 25.714): l0 4.29, l1 -5, l2 2, l3 -1, l4 -2, l5 4
    #   ascending ranks: l1 0, l4 1, l3 2, l2 3, l5 4, l0 5
    # scores 2*w + a: l0 9, l1 2, l2 13, l3 2, l4 7, l5 12
    assert ranked == ["l6", "l1", "l3", "l4", "l0", "l5", "l2"]
    assert details["l3"]["score"] == 2 and details["l2"]["score"] == 13
    with pytest.raises(ValueError):
        quantunev2_rank(table, metrics, g=1.0)
