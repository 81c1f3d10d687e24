"""Timestamped progress lines for long benchmark runs."""

from __future__ import annotations

import time

T0 = time.perf_counter()


def log(msg: str) -> None:
    """Print ``msg`` with the seconds since the benchmark started."""
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", flush=True)
