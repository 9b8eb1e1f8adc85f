"""Decode a whole block read at once: one precompiled ``struct`` for its big-endian numeric points.

A block's registers are packed back into bytes once and unpacked by a single ``struct.Struct``
whose format lists each numeric point's code with pad bytes over the gaps; scale and offset are
applied after. Points a single format cannot express (strings, bit fields, bools on a register,
other byte or word orders, points overlapping another) keep their per-point decoder
(:func:`drivers.modbus.codec.make_decoder`), which stays the reference: the tests check the two
agree on any registers.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING

from drivers.modbus.codec import Decoder, make_decoder, struct_code
from drivers.modbus.plan import Block
from drivers.modbus.points import BIT_TABLES

if TYPE_CHECKING:
    from drivers.modbus.profile import Point, Profile


class BlockDecoder:
    """The values of every point of ``block`` (in ``block.points`` order) from the registers read."""

    def __init__(self, block: Block, profile: Profile) -> None:
        self.count = block.count
        self.bits = block.table in BIT_TABLES
        self.offsets = [p.address - block.address for p in block.points]
        n = len(block.points)
        # Per point: its index in the struct's output (or -1), then scale and offset when not plain.
        self._slot = [-1] * n
        self._scaled: list[tuple[int, float, float]] = []
        self._generic: list[tuple[int, int, int, Decoder]] = []  # (index, offset, registers, decoder)
        fmt = [">"]
        cursor = 0
        used = 0
        for i, p in enumerate(block.points):
            lo = self.offsets[i]
            if self.bits:
                continue
            if self._structable(p, profile) and lo >= cursor:
                if lo > cursor:
                    fmt.append(f"{2 * (lo - cursor)}x")
                fmt.append(struct_code(p.type))
                cursor = lo + p.registers()
                self._slot[i] = used
                used += 1
                if not (p.scale == 1 and p.offset == 0):
                    self._scaled.append((i, p.scale, p.offset))
            else:
                dec = make_decoder(
                    p.type, profile.byte_order_of(p), profile.word_order_of(p), p.bit, p.width, p.scale, p.offset
                )
                self._generic.append((i, lo, p.registers(), dec))
        if cursor < block.count:
            fmt.append(f"{2 * (block.count - cursor)}x")
        self._struct = struct.Struct("".join(fmt)) if used else None
        self._pack = struct.Struct(f">{block.count}H").pack
        self._all_struct = used == n and not self._scaled

    @staticmethod
    def _structable(p: Point, profile: Profile) -> bool:
        if not struct_code(p.type) or profile.byte_order_of(p) != "big":
            return False
        return p.registers() == 1 or profile.word_order_of(p) == "big"

    def decode(self, regs: Sequence[int] | Sequence[bool]) -> list[int | float | str | bool]:
        """Values of the block's points from its ``count`` registers (or bits)."""
        if self.bits:
            return [bool(regs[lo]) for lo in self.offsets]
        if self._all_struct:
            assert self._struct is not None
            return list(self._struct.unpack(self._pack(*regs)))
        out: list[int | float | str | bool] = [0] * len(self.offsets)
        if self._struct is not None:
            raw = self._struct.unpack(self._pack(*regs))
            for i, slot in enumerate(self._slot):
                if slot >= 0:
                    out[i] = raw[slot]
            for i, scale, offset in self._scaled:
                out[i] = out[i] * scale + offset  # type: ignore[operator]
        for i, lo, n, dec in self._generic:
            out[i] = dec([int(v) for v in regs[lo : lo + n]])
        return out
