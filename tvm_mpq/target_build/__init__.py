"""From a Relax module to scheduled kernels without tuning: the target's build passes
(:mod:`.passes`) and the host builds of the analysis runs (:mod:`.runs`)."""

from tvm_mpq.target_build.runs import (
    KERNEL_BUILD_MACS,
    ParameterBuild,
    compile_for_runs,
    kernel_build,
    kernels_pay_off,
    parameter_build,
)

__all__ = ["KERNEL_BUILD_MACS", "ParameterBuild", "compile_for_runs", "kernel_build", "kernels_pay_off",
           "parameter_build"]
