"""``quantize``: a model and a BOPs reduction rate in, a precision config and a compiled
mixed-precision executable out (load -> calibrate -> analyze -> allocate -> compile)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tvm_mpq.api.for_rate import config_for_rate
from tvm_mpq.calibration.calibrate import CalibrationCache
from tvm_mpq.config.precision_config import PrecisionConfig
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.types import Feed

if TYPE_CHECKING:
    from targets.base import DeployTarget
    from tvm_mpq.compiler.build import TuningOptions
    from tvm_mpq.compiler.pipeline import CompiledModel


@dataclass
class Quantized:
    """What :func:`quantize` returns: the model, its precision config, the compiled model."""

    graph: ModelGraph
    config: PrecisionConfig
    compiled: CompiledModel
    target: DeployTarget
    report: object
    """The sensitivity analysis (``report.sensitivity``: layers, most sensitive first)."""

    @property
    def executable(self):
        """The Relax VM executable (``relax.VirtualMachine(q.executable, tvm.cpu())``)."""
        return self.compiled.executable

    def run(self, feed: Feed) -> list:
        """Run on this host (x86 builds) with numpy inputs; flattened numpy outputs."""
        return self.compiled.run(feed)

    def export(self, path: str | Path) -> Path:
        """Write the shared library with the target's compiler (cross compiler for aarch64)."""
        return self.target.export(self.compiled, path)


def quantize(model: str | ModelGraph, rate: float, method: str = "quantunev2", target: str | DeployTarget = "x86",
             *, calib: str | list[Feed] | None = None, calib_size: int = 16,
             input_shapes: dict[str, tuple[int, ...]] | None = None, observer: str = "minmax", g: float = 2.0,
             stage: str = "A->C", cache: CalibrationCache | None = None,
             tuning: TuningOptions | None = None, bias_correction: bool = True,
             equalize: bool = False, channel_act: bool = True, measured_bias: bool = False,
             weight_rounding: str = "nearest", int8_attention: bool = False) -> Quantized:
    """Quantize ``model`` (zoo name, ``.onnx`` / ``.pt2`` file, or a loaded graph) to the BOPs
    reduction ``rate`` (0 = fp32, 100 = every layer int8) and compile it for ``target``.

    ``calib``: calibration feeds, a directory of images / an ``.npz`` (``calib_size`` samples),
    or None for a zoo model's bundled samples. ``method``: any registered sensitivity method
    (``quantunev2``, ``inorder``, ``weight-sqnr``, ...). ``bias_correction`` / ``equalize``: the
    CLI's ``--[no-]bias-correction`` (on by default, as there; not at stage A) and ``--equalize``
    (:mod:`tvm_mpq.ptq`; recorded in the config); ``channel_act``: the CLI's ``--[no-]channel-act``
    (per-channel depthwise inputs, on by default as there); ``measured_bias``: the CLI's
    ``--measured-bias`` (depthwise convs' bias corrections measured on the int8 model);
    ``weight_rounding``: the CLI's ``--weight-rounding`` (``nearest`` or ``hessian``); ``int8_attention``: the
    CLI's ``--int8-attention`` (matmuls of two activations int8 too). Layers with no integer kernel stay fp32
    (the config's achieved ``bops_reduction_rate`` says what was reached). MpqError for anything
    the caller can fix (unknown model, method or target, a rate outside 0..100).
    """
    from targets import get_target
    from tvm_mpq.calibration import load_calibration
    from tvm_mpq.errors import MpqError
    from tvm_mpq.ptq import PtqOptions
    from tvm_mpq.ptq.equalization import graph_for_options
    from tvm_mpq.zoo import load_model

    if not 0 <= rate <= 100:
        raise MpqError(f"rate {rate} is outside 0..100 (percent BOPs reduction)")
    deploy = get_target(target) if isinstance(target, str) else target
    graph = load_model(model, input_shapes) if isinstance(model, str) else model
    ptq = PtqOptions(equalize=equalize, bias_correction=bias_correction, channel_act=channel_act,
                     measured_bias=measured_bias, weight_rounding=weight_rounding)
    graph = graph_for_options(graph, ptq)
    ptq = ptq.at_stage(stage)
    feeds = calib if isinstance(calib, list) else load_calibration(graph, calib, calib_size)
    config, report = config_for_rate(graph, feeds, rate, method, observer=observer, g=g, cache=cache, stage=stage,
                                     bias_correction=ptq.bias_correction, channel_act=ptq.channel_act,
                                     measured_bias=ptq.measured_bias, weight_rounding=ptq.weight_rounding,
                                     int8_attention=int8_attention)
    compiled = deploy.compile(graph, config, stage=stage, tuning=tuning)
    return Quantized(graph, config, compiled, deploy, report)
