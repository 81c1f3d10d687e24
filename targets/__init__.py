"""Compilation targets (x86 / aarch64 / CUDA), their toolchains, and RPC helpers.

``get_target(name)`` builds a registered :class:`DeployTarget`:

* ``x86`` — this host's x86-64 CPU (``llvm`` with the detected ``mcpu``), local RPC server;
* ``aarch64`` / ``aarch64-dotprod`` — Arm64 Linux, linked with ``aarch64-linux-gnu-g++``, run on
  the QEMU-backed RPC server (``tvm-mpq setup-aarch64``, ``tvm-mpq rpc-server --target aarch64``);
* ``cuda`` — NVIDIA GPU (``nvcc`` fatbin), run on a GPU host's RPC server.

``targets.rpc`` starts local servers and trackers and runs/times exported models over RPC;
``targets.aarch64_sysroot`` sets up the cross toolchain and the arm64 Python sysroot.
"""

from targets.base import DeployTarget, describe_target, get_target, register_target, target_names
from targets import x86 as _x86, aarch64 as _aarch64, cuda as _cuda  # noqa: F401  (register)
from targets.aarch64 import Aarch64DotprodTarget, Aarch64Target
from targets.cuda import CudaTarget
from targets.x86 import X86Target

__all__ = [
    "Aarch64DotprodTarget", "Aarch64Target", "CudaTarget", "DeployTarget", "X86Target", "describe_target",
    "get_target", "register_target", "target_names",
]
