"""Graph-level passes of tvm-mpq, written against Relax (TVM >= 0.20 has no Relay).

Each pass is a ``tvm.transform`` pass: it composes with TVM's own passes in a
``tvm.transform.Sequential`` and runs under a ``tvm.transform.PassContext``. Layers are named
in the IR by their precision annotation (``R.mpq.precision``, the layer table's stable name);
what a pass measured is written on the functions it changed (attributes) or into an object the
caller passes in, never kept on the pass.

The precision decision and its lowering:

* :class:`AnnotatePrecision` - write a precision config into the IR, one annotation per layer;
* :class:`SinkUnitSqueezes` - a squeeze of a conv's unit axis moved below the bias add and
  activation after it (tf2onnx's conv1d), so the bias folds into the conv;
* :class:`FoldBatchNorm` - fold inference batch-norm into the chosen (int8) convs;
* :class:`CorrectBias` - add per-channel bias corrections to chosen layers (bias correction);
* :class:`RoundWeights` - put chosen layers' weights on their int8 grid, rounded as the config
  says (Hessian-weighted rounding);
* :class:`LowerToInteger` - the precision pass: int8 layers to integer kernels (or their QDQ
  simulation), fused groups, uint8 between them;
* :class:`SimulateQuantization` - QDQ on the annotated operands (the sensitivity analysis);
* :class:`InsertSwitchableQDQ` - QDQ whose qparams and on/off are run-time inputs (the probe);
* :class:`RemovePrecisionAnnotations` - drop the annotations.

Other rewrites: :class:`EqualizeCrossLayer` (cross-layer equalization of conv pairs, exact in
fp32), :class:`ConvertToChannelsLast` (NHWC graph for CPU kernels),
:class:`ExposeIntermediates` (tensors as extra outputs: calibration), :class:`InjectTensors`
(tensors fed from outside: teacher forcing), :class:`OffsetLayerOutputs` (run-time vectors added
to chosen layers' outputs, their MAC results returned: measured bias correction), :class:`LiftWeights` (constant weights back to
parameters: the stage-C model), :class:`UniqueBindingNames`. The CPU build's own rewrites
(``tvm_mpq.target_build.passes.graph_passes``) and the readers of what TVM's ONNX importer writes
as opaque TE-built ``call_tir`` (``tvm_mpq.compiler.pipeline.frontend_recovery_passes``:
``te_elementwise.RecoverMinMax`` for clips, ``te_layout.RecoverPad`` for ``auto_pad`` pads,
``te_layout.RecoverTile`` and ``repeat_from_tile.RepeatFromTile`` for tf2onnx's tile upsampling,
as ``R.repeat``) are imported from their modules:
``einsum_as_matmul.EinsumAsMatmul`` (a two-operand einsum that is a matrix product as ``matmul``,
fewest permuted elements, every target),
``one_hot_matmul_as_take.OneHotMatmulAsTake`` (a one-hot row of consecutive integer codes times a
constant weight as ``take`` of the weight's rows, bit for bit, every target),
``drop_empty_concat_inputs.DropEmptyConcatInputs`` (zero-size concat inputs dropped, every target:
TVM cannot load a library holding an empty constant), ``flush_denormals.FlushDenormalWeights``
(subnormal float constants set to zero, every target), ``power_as_multiply.PowerAsMultiply``
(``x ** 2 / 3 / 4`` as multiplies, not one ``powf`` call per element, every target),
``divide_as_multiply.DivideAsMultiply`` (a float32 division by a constant as a multiplication by
its reciprocal, except a quantize step's, every target),
``separable_max_pool.SeparableMaxPool`` (a stride-1 ``k x k`` max pool as ``k x 1`` then
``1 x k``, exact, every target), ``proven_clips.DropProvenClips`` (a clip whose input is
already within its bounds, e.g. a requantize's clamp after ReLU6, dropped, exact, every target), ``take_in_bounds.TakeInBounds`` (gathers clamp their indices:
applied to every model ``tvm_mpq.zoo.load_model`` loads),
``fold_pad.FoldPadIntoConv``, ``group_norm_by_channel.GroupNormByChannel`` (a group norm
around a channel-splitting reshape as per-channel statistics averaged per group: no transposes
in a channels-last graph), ``conv_on_rows.ConvOnRows`` (conv1d and one-column convs along a
row), ``transpose_conv_as_matmul.TransposeConvAsMatmul`` (2-D and 1-D transposed convs, float32 or
int8 codes, as a GEMM and the sum of its shifted blocks), ``sink_row_reshapes.SinkRowReshapes``
(the ops after a row conv on its 4-D output, so they fuse into its kernel),
``flatten_matmul_rows.FlattenMatmulRows`` (a batch of rows times a constant weight as one GEMM),
``pad_matmul_columns.PadMatmulColumns`` (its columns on whole vectors),
``shift_activations.ShiftActivationsToInt8``, ``pad_channels.PadOutputChannels`` (convs and
depthwise convs whose channels fill no whole vector padded to one), ``winograd_conv.Conv2dWinograd`` (float32 3x3
stride-1 convs on large maps as Winograd F(4x4, 3x3)), ``pad_tile_pixels.PadTilePixels`` (GEMMs,
row convs and products of two activations whose pixel count no register tile divides computed
over a few more, sliced back; an int8 GEMM on AMX over a count an 8-16-row tile divides),
``lane_variance.LaneVariance`` (a float32 variance along rows summed into 16 vector-lane
partials), ``lane_argmax.LaneArgmax`` (a float32 argmax along rows: a vector max, then the first
position holding it), ``lane_softmax.LaneSoftmax`` (a float32
row softmax reduced into one accumulator per vector lane), ``fast_exp.VectorExp`` (float32 exp /
sigmoid / tanh / erf as vectorizable polynomials), ``channel_pad.ChannelPad`` (a per-channel
zero-point pad as one pad kernel), between ``FuseOps`` and ``FuseTIR``,
``fuse_pad_into_mac.FusePadIntoMac`` (an int8 conv's zero-point pad inside the conv's kernel)
and, on the fused PrimFuncs of CPUs with FMA, ``exact_quotients.ExactQuotients`` (an int8
kernel's requantizing division as a multiply and three FMAs, the same float).
"""

from relay_passes.annotate_precision import AnnotatePrecision, config_annotations
from relay_passes.convert_layout import ConvertToChannelsLast, channels_last_counts
from relay_passes.correct_bias import CorrectBias, bias_corrected_layers
from relay_passes.equalize import EqualizeCrossLayer, EqualizedPair, equalized_pairs
from relay_passes.expose_intermediates import ExposeIntermediates
from relay_passes.fold_batch_norm import FoldBatchNorm, folded_layers
from relay_passes.inject_tensors import InjectTensors
from relay_passes.lift_weights import LiftWeights
from relay_passes.lower_to_integer import (Border, LowerToInteger, LoweringStats, LoweringTrace, lowering_borders,
                                           lowering_stats)
from relay_passes.offset_outputs import OffsetLayerOutputs
from relay_passes.sink_unit_squeezes import SinkUnitSqueezes
from relay_passes.precision_annotation import (PrecisionAnnotation, RemovePrecisionAnnotations, annotate,
                                               layer_annotations, map_annotations, read_annotation,
                                               reannotate_for_weight)
from relay_passes.round_weights import RoundWeights, rounded_layers
from relay_passes.simulate_quantization import SimulateQuantization
from relay_passes.switchable_qdq import InsertSwitchableQDQ
from relay_passes.unique_names import UniqueBindingNames

__all__ = ["AnnotatePrecision", "Border", "ConvertToChannelsLast", "CorrectBias", "EqualizeCrossLayer",
           "EqualizedPair", "ExposeIntermediates", "FoldBatchNorm", "InjectTensors", "InsertSwitchableQDQ",
           "LiftWeights", "LowerToInteger", "LoweringStats", "LoweringTrace", "OffsetLayerOutputs", "PrecisionAnnotation",
           "RemovePrecisionAnnotations", "RoundWeights", "SimulateQuantization", "SinkUnitSqueezes", "UniqueBindingNames",
           "annotate",
           "bias_corrected_layers", "channels_last_counts", "config_annotations", "equalized_pairs", "folded_layers",
           "layer_annotations", "lowering_borders", "lowering_stats", "map_annotations", "read_annotation",
           "reannotate_for_weight", "rounded_layers"]
