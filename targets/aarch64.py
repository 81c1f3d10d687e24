"""64-bit Arm Linux (``aarch64-linux-gnu``): NEON, optionally the dot-product extension (``sdot``).

Libraries are linked with the ``aarch64-linux-gnu-g++`` cross compiler and run on an RPC server:
on this machine the QEMU-backed one (``tvm-mpq rpc-server --target aarch64``), or a real board's.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Callable

from targets.aarch64_sysroot import CROSS_CXX, require_cross_compiler
from targets.base import DeployTarget, register_target
from targets.elf import EM_AARCH64


@register_target
class Aarch64Target(DeployTarget):
    """``{"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"(, "+dotprod")]}``.

    ``mcpu``: an LLVM CPU name (``cortex-a76``) when the board is known; ``num_cores``: the
    board's core count for the thread pool hint (unset: TVM's default).
    """

    name = "aarch64"
    description = "64-bit Arm Linux, NEON (cross g++, QEMU RPC server here)"
    device_kind = "cpu"
    elf_machine = EM_AARCH64
    server_arch = "aarch64"
    default_dotprod = False

    def __init__(self, dotprod: bool | None = None, mcpu: str | None = None, num_cores: int | None = None) -> None:
        self.dotprod = self.default_dotprod if dotprod is None else dotprod
        self.mcpu = mcpu
        self.num_cores = num_cores

    def target_dict(self) -> dict[str, Any]:
        """The aarch64 ``llvm`` target dict."""
        d: dict[str, Any] = {"kind": "llvm", "mtriple": "aarch64-linux-gnu",
                             "mattr": ["+neon", "+dotprod"] if self.dotprod else ["+neon"]}
        if self.mcpu:
            d["mcpu"] = self.mcpu
        if self.num_cores:
            d["num-cores"] = self.num_cores
        return d

    def fcompile(self) -> Callable:
        """``tvm.support.cc.cross_compiler("aarch64-linux-gnu-g++")``."""
        from tvm.support import cc

        return cc.cross_compiler(CROSS_CXX)

    def check_toolchain(self) -> None:
        """MpqError naming ``tvm-mpq setup-aarch64`` when the cross g++ is missing."""
        require_cross_compiler()


@register_target
class Aarch64DotprodTarget(Aarch64Target):
    """:class:`Aarch64Target` with ``+dotprod`` (Armv8.2-A ``sdot``/``udot``; Cortex-A55/A76 and later)."""

    name = "aarch64-dotprod"
    description = "64-bit Arm Linux, NEON + dot product (sdot/udot)"
    default_dotprod = True
