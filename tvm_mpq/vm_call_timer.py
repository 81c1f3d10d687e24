"""Wall time of every call a Relax VM makes, from its instrument hook.

``VirtualMachine.set_instrument(timer.hook)`` calls the hook before and after each kernel or
builtin call. Imports nothing, not even TVM: :mod:`tvm_mpq.runtime.profiler` times CPU kernels
with it, and ``benchmarks/cuda_device.py`` GPU kernels on a host that has only TVM's runtime
(``sync``: the device's synchronisation, so a kernel is timed to its end, not to its launch).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class CallTimer:
    """Seconds and call counts per VM call symbol, summed over every run while installed."""

    def __init__(self, sync: Callable[[], Any] | None = None) -> None:
        self.totals: dict[str, list[float]] = {}
        self._starts: list[float] = []
        self._sync = sync

    def hook(self, _func: Any, symbol: Any, before_run: bool, _ret: Any, *_args: Any) -> int:
        """The VM's instrument signature; returns 0 (run the call, keep instrumenting)."""
        if self._sync is not None:
            self._sync()
        if before_run:
            self._starts.append(time.perf_counter())
        else:
            entry = self.totals.setdefault(str(symbol), [0.0, 0])
            entry[0] += time.perf_counter() - self._starts.pop()
            entry[1] += 1
        return 0
