"""Register codecs: the value types of a device profile, in every byte and word order.

A multi-register value is laid out as its big-endian bytes split into 16-bit words, most
significant word first. ``word_order: little`` reverses the words (CDAB for a float32);
``byte_order: little`` swaps the two bytes inside every word (BADC); both together give DCBA.
Scale and offset apply after decoding: ``value = raw * scale + offset``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from typing import Literal

DataType = Literal[
    "bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string", "bits"
]
Order = Literal["big", "little"]

# struct format and register count of the fixed-size numeric types.
_FORMATS: dict[str, tuple[str, int]] = {
    "int16": (">h", 1),
    "uint16": (">H", 1),
    "int32": (">i", 2),
    "uint32": (">I", 2),
    "int64": (">q", 4),
    "uint64": (">Q", 4),
    "float32": (">f", 2),
    "float64": (">d", 4),
}
INTEGER_TYPES = frozenset({"int16", "uint16", "int32", "uint32", "int64", "uint64"})


def register_count(dtype: str, count: int | None = None) -> int:
    """Registers a value of ``dtype`` occupies (``count`` for strings)."""
    if dtype in _FORMATS:
        return _FORMATS[dtype][1]
    if dtype == "string":
        return count or 1
    return 1  # bool and bits on a register


def struct_code(dtype: str) -> str:
    """The ``struct`` code of a fixed-size numeric type (``H`` for uint16), or "" for any other type."""
    return _FORMATS[dtype][0][1] if dtype in _FORMATS else ""


def _words_from_bytes(raw: bytes, byte_order: Order, word_order: Order) -> list[int]:
    words = [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
    if word_order == "little":
        words.reverse()
    if byte_order == "little":
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    return words


def _bytes_from_words(words: Sequence[int], byte_order: Order, word_order: Order) -> bytes:
    ws = list(words)
    if byte_order == "little":
        ws = [((w & 0xFF) << 8) | (w >> 8) for w in ws]
    if word_order == "little":
        ws.reverse()
    return b"".join(w.to_bytes(2, "big") for w in ws)


def decode_raw(
    regs: Sequence[int],
    dtype: str,
    byte_order: Order = "big",
    word_order: Order = "big",
    bit: int | None = None,
    width: int = 1,
) -> int | float | str | bool:
    """The raw value held by ``regs`` (exactly :func:`register_count` registers)."""
    if dtype in _FORMATS:
        fmt, n = _FORMATS[dtype]
        if len(regs) != n:
            raise ValueError(f"{dtype} needs {n} registers, got {len(regs)}")
        value: int | float = struct.unpack(fmt, _bytes_from_words(regs, byte_order, word_order))[0]
        return value
    if dtype == "string":
        text = _bytes_from_words(regs, byte_order, "big").split(b"\x00", 1)[0]
        return text.decode("ascii", errors="replace").strip()
    reg = regs[0]
    if dtype == "bool":
        return bool(reg >> (bit or 0) & 1) if bit is not None else reg != 0
    return (reg >> (bit or 0)) & ((1 << width) - 1)


def encode_raw(
    value: int | float | str | bool,
    dtype: str,
    byte_order: Order = "big",
    word_order: Order = "big",
    count: int | None = None,
) -> list[int]:
    """Registers holding raw ``value``; :class:`ValueError` if it does not fit."""
    if dtype in _FORMATS:
        fmt, _ = _FORMATS[dtype]
        if dtype in INTEGER_TYPES:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(f"{value!r} is not an integer")
            value = int(value)
        try:
            raw = struct.pack(fmt, value)
        except (struct.error, OverflowError) as exc:
            raise ValueError(f"{value!r} does not fit {dtype}") from exc
        return _words_from_bytes(raw, byte_order, word_order)
    if dtype == "string":
        n = count or 1
        data = str(value).encode("ascii")
        if len(data) > 2 * n:
            raise ValueError(f"{value!r} is longer than {2 * n} characters")
        return _words_from_bytes(data.ljust(2 * n, b"\x00"), byte_order, "big")
    if dtype == "bool":
        return [1 if value else 0]
    raise ValueError(f"{dtype} values cannot be encoded on their own (bit fields share a register)")


def apply_scale(raw: int | float | str | bool, scale: float, offset: float) -> int | float | str | bool:
    """``raw * scale + offset`` for numbers; integers stay integers when scale is 1 and offset 0."""
    if isinstance(raw, (str, bool)):
        return raw
    if scale == 1 and offset == 0:
        return raw
    return raw * scale + offset


def unscale(value: float, dtype: str, scale: float, offset: float) -> int | float:
    """The raw value that decodes to ``value`` (rounded for integer types)."""
    raw = (value - offset) / scale
    if dtype in INTEGER_TYPES:
        if not math.isfinite(raw):
            raise ValueError(f"{value!r} is not a finite number")
        return round(raw)
    return raw


Decoder = Callable[[Sequence[int]], "int | float | str | bool"]


def make_decoder(
    dtype: str,
    byte_order: Order = "big",
    word_order: Order = "big",
    bit: int | None = None,
    width: int = 1,
    scale: float = 1.0,
    offset: float = 0.0,
) -> Decoder:
    """A function from registers to the scaled value, with fast paths for the common cases.

    Equivalent to ``apply_scale(decode_raw(...), scale, offset)`` (the tests check it).
    """
    plain = scale == 1 and offset == 0
    if byte_order == "big" and dtype in ("uint16", "int16"):
        signed = dtype == "int16"
        if plain:
            return (lambda r: r[0] - 0x10000 if r[0] & 0x8000 else r[0]) if signed else (lambda r: r[0])
        if signed:
            return lambda r: (r[0] - 0x10000 if r[0] & 0x8000 else r[0]) * scale + offset
        return lambda r: r[0] * scale + offset
    if dtype in _FORMATS and byte_order == "big" and word_order == "big":
        unpack = struct.Struct(_FORMATS[dtype][0]).unpack
        pack = struct.Struct(f">{_FORMATS[dtype][1]}H").pack
        if plain:
            return lambda r: unpack(pack(*r))[0]
        return lambda r: unpack(pack(*r))[0] * scale + offset

    def generic(r: Sequence[int]) -> int | float | str | bool:
        return apply_scale(decode_raw(r, dtype, byte_order, word_order, bit, width), scale, offset)

    return generic
