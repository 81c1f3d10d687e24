"""The compile pipeline: precision config + stage-A model -> fused integer/fp32 executable."""

from tvm_mpq.compiler.pipeline import CompiledModel, bind_params, compile_model, compile_pipeline, insert_after

__all__ = ["CompiledModel", "bind_params", "compile_model", "compile_pipeline", "insert_after"]
