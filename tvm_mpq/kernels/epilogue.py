"""Which epilogue blocks of a fused MAC PrimFunc may be computed per output tile.

The MAC rules inline a fused kernel's epilogue (bias, activation, requantize ...) into its last
block and compute that block at the MAC's register tile (``reverse_compute_at``): the block then
runs over exactly the tile's output positions. That is right only for blocks whose iteration
space is the MAC's output. A shape-changing tail, e.g. the zero padding of the next depthwise
conv that ``FuseOps`` fuses after ``conv -> bias -> relu6``, writes a larger buffer: computed at
the tile it would write the interior only and leave the border uninitialized (efficientnet-lite0
lost 8-20 dB of output SQNR to garbage borders). :func:`split_epilogue` keeps such a tail out of
the tile, and :func:`schedule_tail` gives it its own loop nest over the whole output.
"""

from __future__ import annotations

from tvm import s_tir


def _written_shape(sch: s_tir.Schedule, name: str) -> tuple[int, ...] | None:
    block = sch.get(sch.get_sblock(name))
    if len(block.writes) != 1:
        return None
    return tuple(int(d) for d in block.writes[0].source.shape)


def split_epilogue(sch: s_tir.Schedule, mac_block: str, epilogue: list[str]) -> tuple[list[str], list[str]]:
    """``(per_tile, tail)``: the leading epilogue blocks that iterate over, and write, a buffer of
    the shape the MAC block writes (computed at the tile), and the rest, from the first block
    that does not (left at the root, each its own loop nest after the MAC's)."""
    out_shape = _written_shape(sch, mac_block)
    for k, name in enumerate(epilogue):
        block = sch.get(sch.get_sblock(name))
        extents = tuple(int(v.dom.extent) for v in block.iter_vars)
        if out_shape is None or _written_shape(sch, name) != out_shape or extents != out_shape:
            return list(epilogue[:k]), list(epilogue[k:])
    return list(epilogue), []


def schedule_tail(sch: s_tir.Schedule, tail: list[str]) -> None:
    """Each tail block: its outer loop parallel (the blocks stay separate loop nests)."""
    for name in tail:
        loops = sch.get_loops(sch.get_sblock(name))
        if loops:
            sch.parallel(sch.fuse(*loops[:-1]) if len(loops) > 1 else loops[0])
