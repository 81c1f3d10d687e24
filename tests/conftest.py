"""Shared fixtures: small real models built with torch and imported through our frontends."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("TVM_MPQ_NO_PROGRESS", "1")

#: The longest test modules (2-core Zen 4: the tutorials 7 min together, the corpus 3 min, the
#: RPC tuning and sweep modules 2-3 min each), collected first so that ``make test``'s two
#: workers (``pytest -n 2 --dist loadfile``: one module per worker at a time) start them at once
#: instead of ending on one of them alone.
SLOW_MODULES_FIRST = ("test_tutorials.py", "test_model_corpus.py", "test_tuning_rpc.py", "test_sweep.py")


def pytest_collection_modifyitems(session, config, items):  # noqa: ARG001 - pytest's hook signature
    rank = {name: k for k, name in enumerate(SLOW_MODULES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


class ConvBnReluNet(torch.nn.Module):
    """conv-bn-relu -> depthwise conv-bn-relu -> residual add -> pool -> linear (4 MAC layers)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = torch.nn.BatchNorm2d(8)
        self.dw = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.bn2 = torch.nn.BatchNorm2d(8)
        self.pw = torch.nn.Conv2d(8, 8, 1)
        self.fc = torch.nn.Linear(8, 5)
        for bn in (self.bn1, self.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        z = torch.relu(self.bn2(self.dw(y)))
        z = self.pw(z) + y
        return self.fc(z.mean((2, 3)))


def softmax_module(shape: tuple[int, ...], axis: int = -1):
    """A Relax module of one float32 softmax of ``shape`` over ``axis`` (the kernel tests)."""
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.nn.softmax(x, axis=axis))
        bb.emit_func_output(y)
    return bb.get()


def argmax_module(shape: tuple[int, ...], keepdims: bool = False):
    """A Relax module of one float32 argmax of ``shape`` over its last axis (the kernel tests)."""
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.argmax(x, axis=-1, keepdims=keepdims))
        bb.emit_func_output(y)
    return bb.get()


def activations_module(shape: tuple[int, ...]):
    """``log_softmax(gelu(x) + silu(x) + softplus(x) + log(|x| + 1))`` along rows: the activations
    TVM lowers to libm calls (the kernel tests)."""
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            terms = [relax.op.nn.gelu(x), relax.op.nn.silu(x), relax.op.nn.softplus(x),
                     relax.op.log(relax.op.add(relax.op.abs(x), relax.const(np.float32(1.0))))]
            total = terms[0]
            for term in terms[1:]:
                total = relax.op.add(total, term)
            y = bb.emit_output(relax.op.nn.log_softmax(total, axis=-1))
        bb.emit_func_output(y)
    return bb.get()


def layer_norm_module(shape: tuple[int, ...]):
    """A Relax module of one float32 layer norm over the last axis of ``shape``, seeded gamma and
    beta (the kernel tests)."""
    from tvm import relax

    rng = np.random.default_rng(shape[-1])
    gamma, beta = (rng.normal(size=shape[-1]).astype(np.float32) for _ in range(2))
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.nn.layer_norm(x, relax.const(gamma), relax.const(beta), axes=[-1], epsilon=1e-5))
        bb.emit_func_output(y)
    return bb.get()


class AttentionNet(torch.nn.Module):
    """A linear layer feeding an activation x activation matmul (q @ k^T), then a linear head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(8, 8)
        self.head = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.proj(x)
        return self.head(q @ x.transpose(1, 2))


@pytest.fixture(scope="session")
def small_graph():
    from tvm_mpq.frontends.torch_frontend import from_module

    return from_module(ConvBnReluNet(), {"x": np.zeros((1, 3, 16, 16), np.float32)}, "small")


@pytest.fixture(scope="session")
def small_feeds():
    rng = np.random.default_rng(0)
    return [{"x": rng.normal(size=(1, 3, 16, 16)).astype(np.float32)} for _ in range(4)]


@pytest.fixture(scope="session")
def small_configs(small_graph, small_feeds):
    """Precision configs of the small model: ``{100: fully int8 (min/max ranges), 0: all fp32}``."""
    from tvm_mpq.allocation import allocate_by_rate
    from tvm_mpq.calibration import calibrate
    from tvm_mpq.config.build import build_config
    from tvm_mpq.config.precision_config import LayerPrecision, PrecisionConfig
    from tvm_mpq.graph import build_layer_table

    table = build_layer_table(small_graph)
    ranges = {v: r[8] for v, r in calibrate(small_graph, small_feeds, table.activation_operands(), "minmax").items()}
    int8 = build_config(small_graph, table, allocate_by_rate(table, table.names(), 100), ranges, {"requested_rate": 100})
    fp32 = PrecisionConfig(small_graph.name, {layer.name: LayerPrecision(None, None) for layer in table})
    return {100: int8, 0: fp32}


@pytest.fixture(scope="module")
def tracker():
    """A local RPC tracker (one per test module)."""
    from targets.rpc import LocalTracker

    with LocalTracker() as tracker:
        yield tracker


@pytest.fixture(scope="module")
def pool(tracker):
    """Two loopback x86 servers registered with the tracker under the key 'pool'."""
    from targets.rpc import LocalRpcServer, start_servers

    servers = start_servers(*(LocalRpcServer("x86", tracker=tracker.address, key="pool") for _ in range(2)))
    yield servers
    for server in servers:
        server.stop()


# -- the reference the analysis probe is checked against: one SimulateQuantization compile ------
def annotation_for(layer, params, data_qp, w_bits, weight_qp=None):
    """The precision annotation simulating ``layer`` with data quantizer ``data_qp`` (None: fp32
    activations) and ``w_bits``-bit weights (None: fp32), per-channel weight scales computed from
    the weight operand; ``weight_qp`` quantizes the second operand of an activation x activation
    matmul."""
    from relay_passes import PrecisionAnnotation
    from tvm_mpq.quantization.quantizers import weight_scales

    a_bits = 32 if data_qp is None else data_qp.bits
    if layer.weight_param is not None and w_bits is not None:
        scales = weight_scales(layer.weight_operand(params), w_bits, layer.channel_axis)
        return PrecisionAnnotation(layer.name, w_bits, a_bits, data_qp, scales)
    w_bits = 32 if weight_qp is None else weight_qp.bits
    return PrecisionAnnotation(layer.name, w_bits, a_bits, data_qp, weight_act=weight_qp)


def simulated(graph, table, annotations):
    """``graph`` with the layers in ``annotations`` fake-quantized (AnnotatePrecision, then
    SimulateQuantization)."""
    import tvm

    from relay_passes import AnnotatePrecision, SimulateQuantization

    seq = tvm.transform.Sequential([AnnotatePrecision(annotations, table), SimulateQuantization()],
                                   name="tvm_mpq.simulate")
    return graph.with_module(seq(graph.mod))
