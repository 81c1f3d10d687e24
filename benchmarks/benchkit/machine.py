"""The machine a benchmark ran on: CPU, instruction-set flags, threads, versions, load."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")


def machine_info(threads: int, target) -> dict:
    import onnxruntime as ort
    import tvm

    from tvm_mpq.runtime.executor import cpuinfo_flags, hidden_flag_prefixes

    cpu = ""
    flags = set(cpuinfo_flags() or [])  # less what TVM_MPQ_HIDE_CPU_FLAGS hides from tvm-mpq
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cpu = cpu or platform.processor() or "unknown"
    return {"cpu": cpu, "machine": platform.machine(), "cores": os.cpu_count(), "threads": threads,
            "flags": {f: f in flags for f in FLAGS},
            "hidden_flag_prefixes": list(hidden_flag_prefixes()),
            "llvm_mcpu": str(target.attrs.get("mcpu", "generic")), "target": str(target),
            "tvm_version": tvm.__version__, "onnxruntime_version": ort.__version__, "python": sys.version.split()[0],
            "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}




def flags_text(info: dict) -> str:
    """The CPU flags present, as the developers' guide asks to write next to every figure."""
    text = " ".join(f for f, on in info["flags"].items() if on) or "none of " + " ".join(FLAGS)
    hidden = info.get("hidden_flag_prefixes")
    return f"{text} (hidden from tvm-mpq: {', '.join(p + '*' for p in hidden)})" if hidden else text
