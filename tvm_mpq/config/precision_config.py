"""Precision config JSON: read, write, validate against a model's layer table.

Format (``"format": "tvm-mpq/precision-config"``, ``"version": 1``)::

    {"model": "efficientnet-lite0",
     "layers": {"_conv_stem": "fp32",
                "_blocks.0._depthwise_conv": {"w_bits": 8, "a_bits": 8,
                     "act": {"scale": 0.0235, "zero_point": 128, "bits": 8},
                     (per channel: "act": {"scale": [...], "zero_point": [...], "bits": 8}),
                     "weight_scales": [...per output channel...],
                     "bias_correction": [...per output channel, optional...],
                     "weight_rounding": "<base64 flip mask, optional>"},
                "matmul_12": {"w_bits": 8, "a_bits": 8, "act": {...},
                     "b_act": {"scale": 0.041, "zero_point": 131, "bits": 8}}},
     "provenance": {"method": ..., "requested_rate": ..., "bops_reduction_rate": ..., ...}}

Every layer of the model appears exactly once; ``act``/``weight_scales`` are optional (the
compiler recomputes missing ones from calibration and the weights). ``bias_correction`` (bias
correction, ``tvm_mpq.ptq``) is added to the layer's output per channel, after batch-norm
folding, before the precision pass; the ONNX export writes the same corrected bias.
``b_act`` is the second operand's quantizer of an activation x activation matmul (attention's
``q k^T`` and ``p v``: asymmetric per tensor at ``w_bits``, calibrated like ``act``).
``weight_rounding`` (Hessian-weighted rounding, ``tvm_mpq.ptq.weight_rounding``) names the
weights of the (batch-norm folded) layer rounded away from nearest: a bit per weight, zlib,
base64 (``tvm_mpq.quantization.adaptive_rounding.encode_flips``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from tvm_mpq.allocation.bops import FP32, Precision
from tvm_mpq.errors import MpqError
from tvm_mpq.graph.layer_table import LayerTable
from tvm_mpq.quantization.adaptive_rounding import decode_flips
from tvm_mpq.quantization.quantizers import SCALE_RANGE, ActQParams

FORMAT = "tvm-mpq/precision-config"
VERSION = 1
WEIGHT_BITS = range(2, 9)
ACT_BITS = (2, 3, 4, 5, 6, 7, 8, 16)


@dataclass
class LayerPrecision:
    """``None`` bits mean fp32."""

    w_bits: int | None
    a_bits: int | None
    act: ActQParams | None = None
    weight_scales: list[float] | None = None
    bias_correction: list[float] | None = None
    """Added to the layer's output per output channel (batch-norm folded), or None."""
    weight_rounding: str | None = None
    """The weights rounded away from nearest (an encoded flip mask), or None: all to nearest."""
    b_act: ActQParams | None = None
    """An activation x activation matmul's second operand quantizer (``w_bits``), or None."""

    @property
    def is_fp32(self) -> bool:
        return self.w_bits is None

    @property
    def precision(self) -> Precision:
        return FP32 if self.is_fp32 else Precision(self.w_bits, self.a_bits)

    def to_json(self) -> object:
        if self.is_fp32:
            return "fp32"
        out: dict = {"w_bits": self.w_bits, "a_bits": self.a_bits}
        if self.act is not None:
            out["act"] = self.act.to_json()
        if self.weight_scales is not None:
            out["weight_scales"] = [float(s) for s in self.weight_scales]
        if self.bias_correction is not None:
            out["bias_correction"] = [float(v) for v in self.bias_correction]
        if self.weight_rounding is not None:
            out["weight_rounding"] = self.weight_rounding
        if self.b_act is not None:
            out["b_act"] = self.b_act.to_json()
        return out


@dataclass
class PrecisionConfig:
    model: str
    layers: dict[str, LayerPrecision]
    provenance: dict = field(default_factory=dict)

    def precisions(self) -> dict[str, Precision]:
        return {name: lp.precision for name, lp in self.layers.items()}

    def fp32_layers(self) -> list[str]:
        return [name for name, lp in self.layers.items() if lp.is_fp32]

    def to_json(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "model": self.model,
                "layers": {n: lp.to_json() for n, lp in self.layers.items()},
                "provenance": self.provenance}

    def save(self, path: Path | str) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=1))

    @staticmethod
    def load(path: Path | str) -> "PrecisionConfig":
        path = Path(path)
        if not path.is_file():
            raise MpqError(f"config file '{path}' does not exist")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise MpqError(f"config file '{path}' is not JSON: {err}") from None
        except OSError as err:
            raise MpqError(f"cannot read config file '{path}': {err.strerror or err}") from None
        return PrecisionConfig.from_json(data, str(path))

    @staticmethod
    def from_json(data: object, origin: str = "config") -> "PrecisionConfig":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise MpqError(f"{origin} is not a tvm-mpq precision config (\"format\": \"{FORMAT}\" missing)")
        if data.get("version") != VERSION:
            raise MpqError(f"{origin} has config version {data.get('version')!r}, this tvm-mpq reads {VERSION!r}")
        layers_json = data.get("layers")
        if not isinstance(layers_json, dict):
            raise MpqError(f"{origin}: \"layers\" must be an object of layer name -> precision")
        provenance = data.get("provenance", {})
        if not isinstance(provenance, dict):
            raise MpqError(f"{origin}: \"provenance\" must be an object (what made the config), not "
                           f"{type(provenance).__name__}")
        transforms = provenance.get("graph_transforms", {})
        if not isinstance(transforms, dict) or not all(isinstance(v, dict) for v in transforms.values()):
            raise MpqError(f"{origin}: \"provenance\".\"graph_transforms\" must be an object of rewrite name -> "
                           f"its record (object), not {type(transforms).__name__}")
        layers = {name: _parse_layer(name, value, origin) for name, value in layers_json.items()}
        return PrecisionConfig(str(data.get("model", "")), layers, dict(provenance))

    def validate(self, table: LayerTable) -> None:
        """MpqError unless the config covers exactly the model's layers with supported bits."""
        names = set(table.names())
        unknown = [n for n in self.layers if n not in names]
        if unknown:
            raise MpqError(f"config names {len(unknown)} layer(s) not in the model: {', '.join(unknown[:5])}")
        missing = [n for n in table.names() if n not in self.layers]
        if missing:
            raise MpqError(f"config does not cover {len(missing)} layer(s) of the model: {', '.join(missing[:5])}")
        for layer in table:
            lp = self.layers[layer.name]
            if lp.weight_scales is not None and layer.weight_param is not None:
                channels = layer.weight_shape[layer.channel_axis]
                if len(lp.weight_scales) != channels:
                    raise MpqError(f"config layer '{layer.name}': {len(lp.weight_scales)} weight scales for "
                                   f"{channels} output channels")
            if lp.act is not None and lp.act.per_channel and (
                    layer.kind != "depthwise_conv2d" or layer.weight_shape[0] % lp.act.channels):
                raise MpqError(f"config layer '{layer.name}': a per-channel activation quantizer "
                               f"({lp.act.channels} channels) is for depthwise conv inputs only, not a {layer.kind} "
                               f"with {layer.weight_shape[0] if layer.weight_shape else '?'} output channels")
            if lp.bias_correction is not None:
                channels = layer.output_shape[1 if "conv" in layer.kind else -1] if layer.output_shape else None
                if channels is not None and len(lp.bias_correction) != channels:
                    raise MpqError(f"config layer '{layer.name}': {len(lp.bias_correction)} bias corrections for "
                                   f"{channels} output channels")
            if lp.b_act is not None and layer.weight_param is not None:
                raise MpqError(f"config layer '{layer.name}': \"b_act\" is for an activation x activation matmul's "
                               f"second operand; this {layer.kind} has a constant weight")
            if lp.weight_rounding is not None:
                if layer.weight_param is None:
                    raise MpqError(f"config layer '{layer.name}': a weight rounding for a layer without a constant weight")
                try:
                    decode_flips(lp.weight_rounding, layer.weight_shape)
                except ValueError as err:
                    raise MpqError(f"config layer '{layer.name}': weight_rounding: {err}") from None


def _parse_layer(name: str, value: object, origin: str) -> LayerPrecision:
    if value == "fp32":
        return LayerPrecision(None, None)
    if not isinstance(value, dict) or "w_bits" not in value or "a_bits" not in value:
        raise MpqError(f"{origin}: layer '{name}' must be \"fp32\" or {{\"w_bits\": b, \"a_bits\": b}}")
    w_bits, a_bits = value["w_bits"], value["a_bits"]
    if not isinstance(w_bits, int) or w_bits not in WEIGHT_BITS:
        raise MpqError(f"{origin}: layer '{name}' has w_bits {w_bits!r}; supported: 2..8")
    if not isinstance(a_bits, int) or a_bits not in ACT_BITS:
        raise MpqError(f"{origin}: layer '{name}' has a_bits {a_bits!r}; supported: 2..8 or 16")
    act = _parse_quantizer(name, value, "act", "a_bits", a_bits, origin)
    b_act = _parse_quantizer(name, value, "b_act", "w_bits", w_bits, origin)
    scales = value.get("weight_scales")
    if scales is not None and (not isinstance(scales, list)
                               or not all(isinstance(s, (int, float)) and math.isfinite(s) and s > 0 for s in scales)):
        raise MpqError(f"{origin}: layer '{name}' weight_scales must be a list of positive finite numbers")
    correction = value.get("bias_correction")
    if correction is not None and (not isinstance(correction, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in correction)):
        raise MpqError(f"{origin}: layer '{name}' bias_correction must be a list of finite numbers")
    rounding = value.get("weight_rounding")
    if rounding is not None and not isinstance(rounding, str):
        raise MpqError(f"{origin}: layer '{name}' weight_rounding must be a string (an encoded flip mask)")
    return LayerPrecision(w_bits, a_bits, act, scales, correction, rounding, b_act)


def _parse_quantizer(name: str, value: dict, key: str, bits_key: str, bits: int, origin: str) -> ActQParams | None:
    """Layer ``name``'s activation quantizer ``value[key]`` (``act``, or ``b_act`` at ``w_bits``),
    checked against its bit width and valid ranges; None when absent."""
    if key not in value:
        return None
    try:
        qp = ActQParams.from_json(value[key])
    except (KeyError, TypeError, ValueError) as err:
        why = f": {err}" if isinstance(err, ValueError) and "zero_point" in str(err) else ""
        raise MpqError(f"{origin}: layer '{name}' has a malformed \"{key}\" entry{why}") from None
    if qp.bits != bits:
        raise MpqError(f"{origin}: layer '{name}' has {bits_key} {bits} but its \"{key}\" quantizer is for "
                       f"{qp.bits} bits: rerun `tvm-mpq analyze` to calibrate it for {bits} bits")
    if not qp.is_valid():
        raise MpqError(f"{origin}: layer '{name}' has invalid activation qparams {value[key]}: scales must be "
                       f"finite, {SCALE_RANGE[0]:g}..{SCALE_RANGE[1]:g}, zero points codes 0..{qp.qmax}")
    if key == "b_act" and qp.per_channel:
        raise MpqError(f"{origin}: layer '{name}' has a per-channel \"b_act\": a matmul's second operand is "
                       "quantized per tensor")
    return qp
