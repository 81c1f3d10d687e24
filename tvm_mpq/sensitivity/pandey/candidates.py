"""Bit-width candidates ``W<w>A<a>`` of Pandey et al.'s mixed-precision search.

The default set is the paper's hardware-motivated W4A8, W8A8, W8A16; ``extended`` adds W4A16
and W16A16 (the larger candidate set of their Table 3, as we read it). Only W8A8 has an integer
kernel here; every other candidate is simulated (QDQ).
"""

from __future__ import annotations

import re
from typing import Iterable

from tvm_mpq.allocation.bops import Precision
from tvm_mpq.errors import MpqError

DEFAULT = "W4A8,W8A8,W8A16"
EXTENDED = "W4A8,W4A16,W8A8,W8A16,W16A16"
NAMED = {"default": DEFAULT, "extended": EXTENDED}
_PATTERN = re.compile(r"^W(\d+)A(\d+)$", re.IGNORECASE)


def label(p: Precision) -> str:
    """``Precision(8, 16)`` -> ``"W8A16"``."""
    return f"W{p.w_bits}A{p.a_bits}"


def parse_candidates(spec: str | Iterable[str | Precision]) -> tuple[Precision, ...]:
    """``"W4A8,W8A8"``, ``"default"``, ``"extended"`` or a list -> candidates, highest cost first."""
    if isinstance(spec, str):
        spec = NAMED.get(spec.strip().lower(), spec)
        items: list[str | Precision] = [s.strip() for s in spec.split(",") if s.strip()]
    else:
        items = list(spec)
    out: set[Precision] = set()
    for item in items:
        if isinstance(item, tuple):
            p = Precision(int(item[0]), int(item[1]))
        else:
            m = _PATTERN.match(str(item))
            if m is None:
                raise MpqError(f"candidate '{item}' is not W<bits>A<bits> (e.g. W8A16), 'default' or 'extended'")
            p = Precision(int(m.group(1)), int(m.group(2)))
        if not (2 <= p.w_bits <= 16 and 2 <= p.a_bits <= 16):
            raise MpqError(f"candidate {label(p)}: weight and activation bits must lie in 2..16")
        out.add(p)
    if len(out) < 2:
        raise MpqError("Pandey et al. need at least two bit-width candidates")
    return tuple(sorted(out, key=cost_key, reverse=True))


def cost_key(p: Precision) -> tuple[int, int, int]:
    """Order by BOPs per MAC, then weight bits."""
    return (p.w_bits * p.a_bits, p.w_bits, p.a_bits)


def is_lower(c: Precision, current: Precision) -> bool:
    """``c`` is a lower setting than ``current``: no more bits on either operand, fewer in total."""
    return c != current and c.w_bits <= current.w_bits and c.a_bits <= current.a_bits
