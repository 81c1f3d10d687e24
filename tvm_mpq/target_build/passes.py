"""A target's build passes up to scheduled kernels, and codegen's lowering after them.

:func:`kernel_passes` is the build from a lowered Relax module to scheduled kernels with
prepacked weights, around a scheduling pass: :func:`fused_passes` (:func:`graph_passes`, the
target's graph rewrites of :mod:`relay_passes`; :func:`fusion_passes`, TVM's legalization and
fusion), then the scheduler, then weight prepacking (:class:`PrepackWeights`).
:class:`KernelRules` schedules with the rules of :func:`kernel_rules` (:mod:`tvm_mpq.kernels`);
:func:`codegen` is TVM's lowering after scheduling (:func:`lower_after_schedule`) and code
generation.
:mod:`tvm_mpq.compiler.build` schedules with tuning and the tuning database on top of the rules;
:mod:`tvm_mpq.target_build.runs` with the rules alone, for the analysis runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import tvm
from tvm import relax

_CUDA_GRAPHS: ContextVar[bool] = ContextVar("tvm_mpq_cuda_graphs", default=False)
USE_CUDA_GRAPH = "relax.backend.use_cuda_graph"
"""TVM's PassContext option that ``RewriteCUDAGraph`` reads."""


@contextmanager
def cuda_graphs(enabled: bool) -> Iterator[None]:
    """Within: CUDA builds capture their static part as CUDA graphs (see :func:`lower_after_schedule`).

    A context variable rather than TVM's PassContext option: :func:`codegen` runs under whatever
    PassContext its caller entered last (``compile --print-ir`` enters one of its own), which
    would drop the option; the CUDA target's ``build_context`` sets this once."""
    token = _CUDA_GRAPHS.set(enabled)
    try:
        yield
    finally:
        _CUDA_GRAPHS.reset(token)


@tvm.transform.module_pass(opt_level=0, name="RewriteCUDAGraph")
def _rewrite_cuda_graph(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
    """TVM's ``RewriteCUDAGraph`` with its option on when :func:`cuda_graphs` is on, else nothing."""
    if not _CUDA_GRAPHS.get():
        return mod
    current = tvm.transform.PassContext.current()
    with tvm.transform.PassContext(opt_level=current.opt_level, config={**dict(current.config), USE_CUDA_GRAPH: True}):
        return relax.transform.RewriteCUDAGraph()(mod)


def graph_passes(target: tvm.target.Target) -> list[tvm.transform.Pass]:
    """The graph-level passes a target's build starts with: inference batch-norms decomposed
    into arithmetic (a batch norm the precision passes did not fold: stage A), einsums that are
    matrix products as ``matmul`` (:mod:`relay_passes.einsum_as_matmul`), integer matmuls of
    widened 8-bit codes (``MatMulInteger``) as matmuls of the codes the int8 kernels take
    (:mod:`relay_passes.integer_matmul_codes`), one-hot rows times a
    weight as lookups of its rows (:mod:`relay_passes.one_hot_matmul_as_take`), the subnormal
    values of float constants set to zero (:mod:`relay_passes.flush_denormals`), small integer
    powers as multiplies (:mod:`relay_passes.power_as_multiply`), float32 divisions by a constant
    as multiplications by its reciprocal (:mod:`relay_passes.divide_as_multiply`), stride-1 max pools as a column and
    a row pool (:mod:`relay_passes.separable_max_pool`), clips their input already meets dropped
    (:mod:`relay_passes.proven_clips`) and, for
    targets whose kernels are channels-last (:func:`tvm_mpq.kernels.activation_layout`: every
    CPU), zero pads folded into the convs they feed, a group norm written around a
    channel-splitting reshape as per-channel statistics (:mod:`relay_passes.group_norm_by_channel`)
    and the whole graph converted to NHWC once;
    conv1d and convs down a one-pixel column as convs along a row (:mod:`relay_passes.conv_on_rows`);
    upsampling transposed convs as GEMMs (:mod:`relay_passes.transpose_conv_as_matmul`), a batch
    of rows times a constant weight as one GEMM (:mod:`relay_passes.flatten_matmul_rows`) on whole
    vectors of columns (:mod:`relay_passes.pad_matmul_columns`), float32
    3x3 stride-1 convs on large maps as Winograd F(4x4, 3x3) (:mod:`relay_passes.winograd_conv`),
    GEMMs and row convs whose pixel count no tile length divides computed over a few more
    (:mod:`relay_passes.pad_tile_pixels`),
    float32 exp / sigmoid / tanh / erf as vectorizable polynomials (:mod:`relay_passes.fast_exp`),
    float32 softmax along rows with vector accumulators (:mod:`relay_passes.lane_softmax`), a
    float32 variance along rows on 16 fixed lanes (:mod:`relay_passes.lane_variance`), a float32
    argmax along rows as a vector max and a vector search for its first position
    (:mod:`relay_passes.lane_argmax`);
    a per-channel zero-point pad as one kernel (:mod:`relay_passes.channel_pad`);
    for ``sdot`` targets the uint8 activations of int8 MACs shifted to int8 first; int8 convs
    and float32 convs whose output channels fill no whole vector padded to one (:mod:`relay_passes.pad_channels`)."""
    from relay_passes.convert_layout import ConvertToChannelsLast
    from relay_passes.flush_denormals import FlushDenormalWeights
    from relay_passes.drop_empty_concat_inputs import DropEmptyConcatInputs
    from relay_passes.divide_as_multiply import DivideAsMultiply
    from relay_passes.einsum_as_matmul import EinsumAsMatmul
    from relay_passes.integer_matmul_codes import IntegerMatmulOnCodes
    from relay_passes.one_hot_matmul_as_take import OneHotMatmulAsTake
    from relay_passes.power_as_multiply import PowerAsMultiply
    from relay_passes.proven_clips import DropProvenClips
    from relay_passes.separable_max_pool import SeparableMaxPool
    from tvm_mpq.kernels import activation_layout

    passes = [relax.transform.DecomposeOpsForInference(), relax.transform.FoldConstant(),
              EinsumAsMatmul(),  # attention written as einsum: a matmul kernel, not TOPI's scalar loops
              IntegerMatmulOnCodes(),  # MatMulInteger (a model quantized before): the int8 kernels, not int32 loops
              OneHotMatmulAsTake(),  # one_hot(tokens) @ W (an embedding): W's rows, not a GEMM
              DropEmptyConcatInputs(),  # a zero-size constant makes the exported library unloadable
              FlushDenormalWeights(),  # subnormal weights: a microcode assist per multiply on Intel
              PowerAsMultiply(),  # x ** 3 (TensorFlow's GELU): multiplies, not one powf call per element
              DivideAsMultiply(),  # x / sqrt 2 (exact GELU), scores / sqrt d: one multiply, not a divide per vector
              SeparableMaxPool(),  # a stride-1 k x k max pool (keypoint NMS): k x 1 then 1 x k, exact
              DropProvenClips(),  # a requantize's clamp after ReLU6 already bounded its codes
              relax.transform.CanonicalizeBindings()]
    if activation_layout(target) == "NHWC":
        from relay_passes.channel_pad import ChannelPad
        from relay_passes.fast_exp import VectorExp
        from relay_passes.lane_argmax import LaneArgmax
        from relay_passes.lane_softmax import LaneSoftmax
        from relay_passes.lane_variance import LaneVariance
        from relay_passes.conv_on_rows import ConvOnRows
        from relay_passes.stride_as_channels import StrideAsChannels
        from relay_passes.flatten_matmul_rows import FlattenMatmulRows
        from relay_passes.fold_pad import FoldPadIntoConv
        from relay_passes.group_norm_by_channel import GroupNormByChannel
        from relay_passes.pad_matmul_columns import PadMatmulColumns
        from relay_passes.transpose_conv_as_matmul import TransposeConvAsMatmul
        from relay_passes.winograd_conv import Conv2dWinograd
        from relay_passes.pad_channels import PadOutputChannels
        from relay_passes.pad_tile_pixels import PadTilePixels
        from relay_passes.shift_activations import ShiftActivationsToInt8
        from relay_passes.sink_row_reshapes import SinkRowReshapes
        from tvm_mpq.kernels.cpu_isa import cpu_isa

        isa = cpu_isa(target)
        passes += [FoldPadIntoConv(),  # the kernels read a conv's own zero padding in place
                   ConvOnRows(),  # conv1d and convs down a one-pixel column: along a row instead
                   StrideAsChannels(),  # a strided row conv over 1-4 channels: stride 1 over the phases
                   TransposeConvAsMatmul(),  # (no CPU schedule for conv2d_transpose: a GEMM instead)
                   FlattenMatmulRows(),  # batched rows x constant weight: one GEMM of the rows
                   PadMatmulColumns(isa.lanes(32))]  # e.g. 8210 classes: whole vectors, not 2 lanes
        if isa.dot == "sdot":  # signed x signed dot product: activations shifted to int8
            passes += [ShiftActivationsToInt8()]
        # convs with e.g. 10 or 150 output channels on whole vectors (int8: the dot product's)
        passes += [PadOutputChannels((isa.dot_bits if isa.dot is not None else isa.vector_bits) // 32)]
        passes += [GroupNormByChannel(),  # a group norm around a channel-splitting reshape: no transposes
                   ConvertToChannelsLast(isa.dot_group), relax.transform.FoldConstant(),
                   SinkRowReshapes(),  # a row conv's bias / activation / residual add fuse into its kernel
                   ChannelPad(),  # per-channel zero-point pads: one kernel FusePadIntoMac moves into the conv
                   Conv2dWinograd(),  # fp32 3x3 stride-1 convs on large maps: 4x fewer multiplies
                   PadTilePixels(isa),  # 589 rows (19 x 31): 592, so the register tile is not one pixel
                   LaneSoftmax(isa.lanes(32)),  # row softmax: vector max / sum accumulators, no predicates
                   LaneArgmax(isa.lanes(32)),  # row argmax (a tagger's output): vector max, then first position
                   LaneVariance(),  # a variance along rows (instance norms): 16 partial sums, the same on every CPU
                   VectorExp()]  # exp / sigmoid (SiLU epilogues) vectorized, not one expf call per element
    return passes


def fusion_passes(target: tvm.target.Target) -> list[tvm.transform.Pass]:
    """TVM's CPU legalization and fusion (``LegalizeOps`` ... ``FuseOps``, ``FuseTIR``), with,
    on channels-last targets, an int8 conv's zero-point pad moved into the conv's fused group in
    between (:class:`relay_passes.fuse_pad_into_mac.FusePadIntoMac`)."""
    from tvm.relax.backend.cpu_generic.pipeline import legalize_passes

    from tvm_mpq.kernels import activation_layout

    passes = legalize_passes(None)
    if activation_layout(target) == "NHWC":
        from relay_passes.fuse_pad_into_mac import FusePadIntoMac

        at = next(i for i, p in enumerate(passes) if p.info.name == "FuseTIR")
        passes = [*passes[:at], FusePadIntoMac(), *passes[at:]]
    return passes


def fused_passes(target: tvm.target.Target) -> list[tvm.transform.Pass]:
    """:func:`graph_passes`, then :func:`fusion_and_marking_passes`: the passes up to the fused
    PrimFuncs the kernel rules schedule."""
    return [*graph_passes(target), *fusion_and_marking_passes(target)]


def fusion_and_marking_passes(target: tvm.target.Target) -> list[tvm.transform.Pass]:
    """TVM's library dispatch, legalization and fusion (:func:`fusion_passes`), on CPUs with FMA
    the int8 kernels' requantizing divisions as a multiply and FMAs giving the same floats
    (:mod:`relay_passes.exact_quotients`), then the constant weights (and a ``main``'s weight
    parameters) marked layout-free."""
    from tvm.relax.backend.cpu_generic.pipeline import library_dispatch_passes

    from relay_passes.exact_quotients import ExactQuotients
    from tvm_mpq.kernels.cpu_isa import has_fma

    exact = [ExactQuotients()] if has_fma(target) else []
    return [*library_dispatch_passes(None), *fusion_passes(target), *exact, relax.transform.AttachAttrLayoutFreeBuffers()]


def fuse(mod: tvm.IRModule, target: tvm.target.Target | None = None) -> tvm.IRModule:
    """``mod`` after :func:`fused_passes` (for ``target``, default: the current one): the
    PrimFuncs the kernel rules schedule."""
    target = target or tvm.target.Target.current()
    return tvm.transform.Sequential(fused_passes(target))(mod)


def kernel_passes(target: tvm.target.Target, schedule: tvm.transform.Pass) -> list[tvm.transform.Pass]:
    """The build from a lowered Relax module to the module codegen takes, ``schedule`` (a pass
    that schedules the fused PrimFuncs) in the middle: :func:`graph_passes`, legalization and
    fusion (:func:`fusion_passes`), layout-free weights marked, then :func:`scheduling_passes`."""
    return [*fused_passes(target), *scheduling_passes(schedule)]


def scheduling_passes(schedule: tvm.transform.Pass) -> list[tvm.transform.Pass]:
    """``schedule``, then weight prepacking (:class:`PrepackWeights`; each kernel's weight layout
    rewrite folded into the constants), and the calling thread's AMX tile configuration kept
    around every kernel that configures tiles (:class:`~tvm_mpq.kernels.cpu_amx.KeepCallerTileConfig`)."""
    from tvm_mpq.kernels.cpu_amx import KeepCallerTileConfig

    return [schedule, PrepackWeights(), KeepCallerTileConfig(), relax.transform.FoldConstant(),
            relax.transform.DeadCodeElimination()]


@tvm.transform.module_pass(opt_level=0, name="PrepackWeights")
class PrepackWeights:
    """TVM's ``SplitLayoutRewritePreproc`` (each kernel's weight layout rewrite split into a
    function of its own, which ``FoldConstant`` then runs at compile time) on the scheduled
    PrimFuncs only. TVM's pass visits every PrimFunc and fails on one whose root holds a single
    opaque block (``InternalError: There should be a compute block...``), as a legalized
    ``scatter_elements`` does (an audio front end's pre-emphasis, onnx-asr's ``kaldi_conv``);
    the layout-rewrite blocks it splits out are written only by a schedule (a kernel rule, a
    tuning record), so the unscheduled PrimFuncs are set aside and put back unchanged."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        from tvm_mpq.kernels import is_scheduled
        from tvm_mpq.kernels.root_block import with_root_block

        aside = {gv: f for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc) and not is_scheduled(f)}
        kept = {gv: f for gv, f in mod.functions.items() if gv not in aside}
        out = relax.transform.SplitLayoutRewritePreproc()(tvm.IRModule(kept, attrs=mod.attrs, global_infos=mod.global_infos))
        for gv, func in aside.items():
            out[gv] = func
        names = {g.name_hint for g in out.functions}
        for gv, func in kept.items():  # the split kernel keeps its root block's annotations (rule, AMX tiles)
            split = f"{gv.name_hint}_prepacked"  # (TVM's name for the kernel less its weight rewrite)
            if isinstance(func, tvm.tirx.PrimFunc) and split in names:
                target = out.get_global_var(split)
                split_func = out[target]
                out.update_func(target, with_root_block(split_func, annotations={
                    **dict(func.body.block.annotations or {}), **dict(split_func.body.block.annotations or {})}))
        return out


def kernel_rules(target: tvm.target.Target, kernels: bool = True) -> list:
    """The schedule rules a build applies: tvm-mpq's (:mod:`tvm_mpq.kernels`) with ``kernels``;
    without, none on CPUs (TVM's unscheduled loops, the reference) and TVM's GPU rules alone on
    CUDA (a GPU kernel must be scheduled)."""
    from tvm_mpq.kernels import default_schedule_rules, tagged

    if kernels:
        return default_schedule_rules(target)
    if str(target.kind.name) == "cuda":
        from tvm_mpq.kernels.cuda import tvm_gpu_rules

        return [tagged(rule) for rule in tvm_gpu_rules()]
    return []


@tvm.transform.module_pass(opt_level=0, name="KernelRules")
class KernelRules:
    """Schedule the fused PrimFuncs the rules of :func:`kernel_rules` (``kernels``) accept, with
    dlight's ``ApplyDefaultSchedule``; with no rules (a CPU target without ``kernels``) the module
    is left as it is."""

    def __init__(self, target: tvm.target.Target, kernels: bool = True):
        self.target = target
        self.kernels = kernels

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        rules = kernel_rules(self.target, self.kernels)
        if not rules:
            return mod
        from tvm.s_tir import dlight

        with self.target:
            return dlight.ApplyDefaultSchedule(*rules)(mod)


def rules_used(mod: tvm.IRModule) -> dict[str, int]:
    """How many PrimFuncs of ``mod`` each kernel rule scheduled."""
    from tvm_mpq.kernels import rule_of

    counts: dict[str, int] = {}
    for _, func in mod.functions.items():
        if isinstance(func, tvm.tirx.PrimFunc):
            name = rule_of(func)
            if name is not None:
                counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def schedule_kernels(mod: tvm.IRModule, target: tvm.target.Target, kernels: bool = True) -> tvm.IRModule:
    """Legalize and fuse ``mod``, then schedule the kernels the rules of :func:`kernel_rules`
    accept (the module MetaSchedule tuning and the database then see)."""
    with target, tvm.transform.PassContext(opt_level=3):
        return KernelRules(target, kernels)(fuse(mod, target))


def lower_after_schedule(target: tvm.target.Target) -> tvm.transform.Pass:
    """TVM's default lowering after legalization/fusion (dataflow lowering + finalization) for
    the target's backend (CPU, or CUDA).

    On CUDA, inside :func:`cuda_graphs` (the CUDA target's default), TVM's ``RewriteCUDAGraph``
    lifts the statically planned storage out of ``main`` and its static kernel sequence into a
    function the VM captures as one CUDA graph at the first call and replays after (one
    ``cudaGraphLaunch`` instead of a launch and a VM call per kernel). Outside it the pass does
    nothing, as in TVM's default pipeline."""
    if str(target.kind.name) == "cuda":
        from tvm.relax.backend.cuda.pipeline import dataflow_lower_passes, finalize_passes
    else:
        from tvm.relax.backend.cpu_generic.pipeline import dataflow_lower_passes, finalize_passes

    def finalize() -> list[tvm.transform.Pass]:
        return [_rewrite_cuda_graph if p.info.name == "RewriteCUDAGraph" else p for p in finalize_passes(target)]

    @tvm.transform.module_pass(opt_level=0, name="TvmMpqLowerAfterSchedule")
    def _pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        with target:
            return tvm.transform.Sequential([*dataflow_lower_passes(target), *finalize()])(mod)

    return _pipeline


def cuda_graph_captures(executable: relax.VMExecutable) -> int:
    """How many CUDA-graph capture regions the VM of ``executable`` replays (0: every kernel is
    launched on its own; :func:`cuda_graphs`)."""
    return sum(line.split()[:2] == ["call", "vm.builtin.cuda_graph.run_or_capture"]
               for line in executable.as_text().splitlines())


def codegen(mod: tvm.IRModule, target: tvm.target.Target) -> relax.VMExecutable:
    """The executable of a module after :func:`kernel_passes` (TVM's lowering and codegen; on
    CPU targets TVM's TIR pipeline with register tiles kept on the stack,
    :func:`tvm_mpq.kernels.stack_tiles.register_cpu_pipeline`)."""
    from tvm_mpq.kernels.stack_tiles import register_cpu_pipeline

    tir_pipeline = register_cpu_pipeline() if str(target.kind.name) == "llvm" else "default"
    return tvm.compile(mod, target=target, relax_pipeline=lower_after_schedule(target), tir_pipeline=tir_pipeline)
