"""Load TVM's CUDA codegen on a machine without a CUDA driver (compile-only CUDA builds).

The apache-tvm 0.27 wheel keeps its CUDA runtime *and* the step of its CUDA codegen that calls
``nvcc``/NVRTC in ``tvm/lib/libtvm_runtime_cuda.so``, which links the driver ``libcuda.so.1``.
Without a driver that library fails to load and ``tvm.compile`` silently falls back to a module
holding only CUDA C source (no PTX, no cubin). To compile real device code on a build machine,
:func:`ensure_cuda_codegen` builds a stub ``libcuda.so.1`` (every ``cu*`` symbol the library
imports, each returning ``CUDA_ERROR_NO_DEVICE``), loads it, then loads the CUDA library.
``tvm.cuda().exist`` stays False: nothing can run, everything compiles. On a GPU host the real
driver is found and no stub is made.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

from tvm_mpq.errors import MpqError

CUDA_ERROR_NO_DEVICE = 100
_state: dict[str, str] = {}


def stub_dir() -> Path:
    """Where the stub driver is cached (``$TVM_MPQ_CACHE`` or ``~/.cache/tvm-mpq``)."""
    base = os.environ.get("TVM_MPQ_CACHE")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "tvm-mpq") / "cuda-driver-stub"


def cuda_codegen_mode() -> str:
    """``native`` (TVM's CUDA library loaded with a real driver), ``stub`` or ``unavailable``."""
    return _state.get("mode", "unavailable")


def ensure_cuda_codegen() -> str:
    """Make sure TVM's CUDA codegen library is loaded; returns :func:`cuda_codegen_mode`."""
    import tvm

    if "mode" in _state:
        return _state["mode"]
    if tvm.runtime.enabled("cuda"):
        _state["mode"] = "native"
        return "native"
    library = _sidecar_path()
    try:
        _load_sidecar(library)
        _state["mode"] = "native"
    except OSError as err:
        if "libcuda.so" not in str(err):
            raise MpqError(f"cannot load TVM's CUDA library {library.name}: {err}") from None
        stub = build_stub(library)
        ctypes.CDLL(str(stub), mode=ctypes.RTLD_GLOBAL)
        try:
            _load_sidecar(library)
        except OSError as err2:
            raise MpqError(f"cannot load TVM's CUDA library with the stub driver: {err2}") from None
        _state["mode"] = "stub"
    if not tvm.runtime.enabled("cuda"):
        raise MpqError("TVM's CUDA codegen did not register after loading libtvm_runtime_cuda.so")
    return _state["mode"]


def _sidecar_path() -> Path:
    from tvm.base import _LOADED_LIBS

    runtime_dir = Path(_LOADED_LIBS["tvm_runtime"]._name).resolve().parent
    path = runtime_dir / "libtvm_runtime_cuda.so"
    if not path.exists():
        raise MpqError(f"this TVM build has no CUDA support ({path.name} missing next to libtvm_runtime.so)")
    return path


def _load_sidecar(path: Path) -> None:
    from tvm.base import _LOADED_LIBS
    from tvm_ffi.libinfo import load_lib_ctypes

    _LOADED_LIBS["tvm_runtime_cuda"] = load_lib_ctypes(
        package="tvm", target_name="tvm_runtime_cuda", extra_lib_paths=[path.parent], mode="RTLD_LOCAL")


def driver_symbols(library: Path) -> list[str]:
    """The driver API symbols (``cu*``) ``library`` imports, read with ``nm -D``."""
    nm = shutil.which("nm")
    if nm is None:
        raise MpqError("no CUDA driver here, and `nm` (binutils) is missing to build a stub driver for compiling")
    out = subprocess.run([nm, "-D", "--undefined-only", str(library)], capture_output=True, text=True, check=False)
    names = {line.split()[-1].split("@")[0] for line in out.stdout.splitlines() if line.strip()}
    return sorted(n for n in names if n.startswith("cu") and n[2:3].isupper())


def build_stub(library: Path) -> Path:
    """Compile (once, cached) a ``libcuda.so.1`` defining what ``library`` imports from the driver."""
    symbols = driver_symbols(library)
    source = "/* tvm-mpq: compile-only stand-in for the CUDA driver; every call fails. */\n" + "".join(
        f"int {name}(void) {{ return {CUDA_ERROR_NO_DEVICE}; }}\n" for name in symbols)
    directory = stub_dir()
    stub, c_file = directory / "libcuda.so.1", directory / "libcuda_stub.c"
    if stub.exists() and c_file.exists() and c_file.read_text() == source:
        return stub
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise MpqError("no CUDA driver here, and no C compiler (cc) to build a stub driver for compiling CUDA")
    directory.mkdir(parents=True, exist_ok=True)
    # Per-process names, renamed into place: two processes building at once (the test suite's two
    # workers) neither compile a source the other is writing nor load a half-written library.
    tmp, tmp_c = directory / f".libcuda.so.1.{os.getpid()}", directory / f".libcuda_stub.{os.getpid()}.c"
    tmp_c.write_text(source)
    proc = subprocess.run([cc, "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", str(tmp), str(tmp_c)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tmp_c.unlink(missing_ok=True)
        raise MpqError(f"building the stub CUDA driver failed: {proc.stderr.strip().splitlines()[-1:]}")
    tmp.replace(stub)
    tmp_c.replace(c_file)  # after the library: a matching source means its library is in place
    return stub
