"""NVIDIA GPUs: ``{"kind": "cuda", "arch": "sm_XX"}`` with an x86 ``llvm`` host.

Kernels are compiled to a fatbin (cubin inside) by ``nvcc``. Running needs a GPU: on a GPU host
the library runs on that host's RPC server (``remote.cuda()``). On a machine without a CUDA
driver TVM 0.27's wheel cannot load its CUDA codegen sidecar (``libtvm_runtime_cuda.so`` links
``libcuda.so.1``) and would only embed CUDA C source; :mod:`targets.cuda_driver_stub` then
provides a stub driver so ``nvcc`` still produces real device code (compile only).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from collections.abc import Iterator

from tvm_mpq.errors import MpqError

from targets.base import DeployTarget, register_target
from targets.elf import EM_X86_64

if TYPE_CHECKING:
    import tvm

DEFAULT_ARCH = "sm_90"
NO_FAST_MATH = "TVM_CUDA_NVCC_NO_FAST_MATH"
"""The variable that keeps TVM's ``nvcc`` call from adding ``--use_fast_math``."""


def detect_gpu_arch() -> str | None:
    """``sm_XY`` of GPU 0 when this machine has one, else None."""
    import tvm

    dev = tvm.cuda(0)
    if not dev.exist:
        return None
    return "sm_" + str(dev.compute_version).replace(".", "")


def find_nvcc() -> str | None:
    """Path of ``nvcc`` (``PATH``, then ``$CUDA_HOME/bin``, then ``/usr/local/cuda/bin``)."""
    for candidate in (shutil.which("nvcc"), os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@register_target
class CudaTarget(DeployTarget):
    """CUDA for ``arch`` (default: the local GPU's, else ``sm_90``); host code is generic x86-64."""

    name = "cuda"
    description = "NVIDIA GPU (nvcc fatbin; runs on a GPU host's RPC server)"
    device_kind = "cuda"
    elf_machine = EM_X86_64
    server_arch = "x86_64"

    def __init__(self, arch: str | None = None, fast_math: bool = False, cuda_graph: bool = True) -> None:
        self.arch = arch or detect_gpu_arch() or DEFAULT_ARCH
        self.fast_math = fast_math
        self.cuda_graph = cuda_graph
        if not self.arch.startswith("sm_") or not self.arch[3:].isdigit():
            raise MpqError(f"CUDA arch '{self.arch}' is not sm_XY (e.g. sm_80, sm_90)")

    def target_dict(self) -> dict[str, Any]:
        """``{"kind": "cuda", "arch": ..., "host": {"kind": "llvm", ...}}``."""
        return {"kind": "cuda", "arch": self.arch,
                "host": {"kind": "llvm", "mtriple": "x86_64-linux-gnu"}}

    def check_toolchain(self) -> None:
        """MpqError when ``nvcc`` is missing (the CUDA toolkit compiles the kernels)."""
        if find_nvcc() is None:
            raise MpqError("nvcc not found: install the CUDA toolkit (or put nvcc on PATH / set CUDA_HOME)")

    @contextmanager
    def build_context(self) -> Iterator[None]:
        """The target in scope (TVM's CUDA compile callback reads ``arch`` from it), ``nvcc`` as
        the kernel compiler (unless ``TVM_CUDA_COMPILE_MODE`` says otherwise: TVM's CUDA header
        defines the unsigned x signed ``__dp4a`` of the int8 kernels for ``nvcc`` only, NVRTC
        would leave it undefined), and TVM's CUDA codegen loaded (with a stub driver on
        machines without one).

        Unless ``fast_math``, ``nvcc`` runs without TVM's default ``--use_fast_math``: with it,
        an int8 epilogue's division by its output scale is approximate (``__fdividef``), so a
        requantized code lands one step away from the CPU build's wherever the quotient is near
        a rounding tie (EfficientNet-Lite0 fully int8 on an H200: 32.6 dB from the CPU build's
        logits with it, docs/results.md "CUDA builds on a GPU").

        With ``cuda_graph`` (the default) the model's static part is captured as one CUDA graph at
        its first run and replayed after (:func:`tvm_mpq.target_build.passes.cuda_graphs`; the
        same outputs, EfficientNet-Lite0 fully int8 on an H200 0.420 -> 0.355 ms). A library
        built so must not be run with a device synchronisation between its VM calls (a profiler
        instrument): a synchronisation while the graph is captured fails the capture."""
        from targets.cuda_driver_stub import ensure_cuda_codegen
        from tvm_mpq.target_build.passes import cuda_graphs

        ensure_cuda_codegen()
        nvcc = find_nvcc()
        saved = {k: os.environ.get(k) for k in ("TVM_CUDA_COMPILE_MODE", "PATH", NO_FAST_MATH)}
        if "TVM_CUDA_COMPILE_MODE" not in os.environ:
            os.environ["TVM_CUDA_COMPILE_MODE"] = "nvcc"
        if self.fast_math:
            os.environ.pop(NO_FAST_MATH, None)
        else:
            os.environ[NO_FAST_MATH] = "1"
        if nvcc and shutil.which("nvcc") is None:
            os.environ["PATH"] = os.path.dirname(nvcc) + os.pathsep + os.environ.get("PATH", "")
        try:
            with self.tvm_target, cuda_graphs(self.cuda_graph):
                yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def kernel_source(module: tvm.runtime.Module) -> str:
    """The CUDA C of every CUDA module imported by ``module`` (e.g. ``compiled.executable.mod``
    right after a build: a library loaded back from disk keeps only the device binary)."""
    own = module.inspect_source() if str(module.kind) == "cuda" else ""
    return own + "".join(kernel_source(imported) for imported in module.imports)


def compile_ptx(source: str, arch: str) -> str:
    """The PTX ``nvcc`` makes of CUDA C ``source`` for ``arch`` (``sm_XY``): the instructions
    the kernels compile to, readable without a GPU or ``cuobjdump``."""
    nvcc = find_nvcc()
    if nvcc is None:
        raise MpqError("nvcc not found: install the CUDA toolkit (or put nvcc on PATH / set CUDA_HOME)")
    with tempfile.TemporaryDirectory(prefix="tvm-mpq-ptx-") as tmp:
        cu, ptx = Path(tmp) / "kernels.cu", Path(tmp) / "kernels.ptx"
        cu.write_text(source)
        proc = subprocess.run([nvcc, "--ptx", "-O3", f"-arch={arch}", "-o", str(ptx), str(cu)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise MpqError(f"nvcc --ptx failed: {proc.stderr.strip().splitlines()[-1:]}")
        return ptx.read_text()
