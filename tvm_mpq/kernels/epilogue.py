"""Where a MAC kernel's fused epilogue may be computed: per register tile, or after the MAC.

The MAC rules (:mod:`.x86`, :mod:`.int8_dot4`, :mod:`.aarch64`) inline the epilogue blocks into
the last one and compute it at the MAC's tile loop (``reverse_compute_at``): each tile's
accumulators are consumed while still in registers. That is only correct when the last block
iterates over exactly the MAC's output domain. When the fusion put a layout op that changes
the shape there (efficientnet-lite0: the asymmetric "same" pad ``28 -> 29`` of the next
stride-2 depthwise conv, fused after the 1x1 expand conv), ``reverse_compute_at`` only covers
the part of the output that some tile produces: the pad border is never written and the
kernel returns whatever the memory held (wrong, and different from run to run).

:func:`fits_mac_tile` tells the rules which case they have; :func:`schedule_after_mac` leaves
such a block after the MAC, over its whole domain, with its outer loops parallel.
"""

from __future__ import annotations

from tvm import s_tir, tirx


def _extents(block: s_tir.SBlock, spatial_only: bool) -> list[int] | None:
    extents: list[int] = []
    for iv in block.iter_vars:
        if spatial_only and int(iv.iter_type) != 0:
            continue
        if not isinstance(iv.dom.extent, tirx.IntImm):
            return None
        extents.append(int(iv.dom.extent))
    return extents


def fits_mac_tile(sch: s_tir.Schedule, mac: str, last: str) -> bool:
    """Whether block ``last`` (the fused epilogue's last block) iterates over exactly the spatial
    domain of the MAC block ``mac``, so it can be computed per MAC tile. Call it before the
    schedule changes either block; block names, not handles, since rules rewrite functions."""
    mac_extents = _extents(sch.get(sch.get_sblock(mac)), spatial_only=True)
    last_extents = _extents(sch.get(sch.get_sblock(last)), spatial_only=False)
    return mac_extents is not None and mac_extents == last_extents


def schedule_after_mac(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> None:
    """Leave ``block`` at the root (after the MAC, over its whole domain): outer loops parallel."""
    loops = sch.get_loops(block)
    if len(loops) >= 3:
        sch.parallel(sch.fuse(*loops[:2]))
    elif loops:
        sch.parallel(loops[0])
