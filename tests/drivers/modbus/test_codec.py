"""Codecs: every type in every byte/word order round-trips; scale/offset; known layouts."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.modbus.codec import apply_scale, decode_raw, encode_raw, register_count, unscale

ORDERS = [("big", "big"), ("big", "little"), ("little", "big"), ("little", "little")]
INT_RANGES = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}


@pytest.mark.parametrize(("byte_order", "word_order"), ORDERS)
@pytest.mark.parametrize("dtype", sorted(INT_RANGES))
@given(data=st.data())
def test_integers_round_trip(dtype, byte_order, word_order, data):
    lo, hi = INT_RANGES[dtype]
    value = data.draw(st.integers(lo, hi))
    regs = encode_raw(value, dtype, byte_order, word_order)
    assert len(regs) == register_count(dtype)
    assert all(0 <= r <= 0xFFFF for r in regs)
    assert decode_raw(regs, dtype, byte_order, word_order) == value


@pytest.mark.parametrize(("byte_order", "word_order"), ORDERS)
@given(value=st.floats(width=32, allow_nan=False))
def test_float32_round_trip(byte_order, word_order, value):
    regs = encode_raw(value, "float32", byte_order, word_order)
    assert decode_raw(regs, "float32", byte_order, word_order) == value


@pytest.mark.parametrize(("byte_order", "word_order"), ORDERS)
@given(value=st.floats(allow_nan=False))
def test_float64_round_trip(byte_order, word_order, value):
    regs = encode_raw(value, "float64", byte_order, word_order)
    assert decode_raw(regs, "float64", byte_order, word_order) == value


@given(
    text=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=16),
    bo=st.sampled_from(["big", "little"]),
)
def test_string_round_trip(text, bo):
    regs = encode_raw(text, "string", bo, "big", count=8)
    assert len(regs) == 8
    assert decode_raw(regs, "string", bo, "big") == text


@given(reg=st.integers(0, 0xFFFF), bit=st.integers(0, 15), width=st.integers(1, 16))
def test_bit_fields(reg, bit, width):
    width = min(width, 16 - bit)
    assert decode_raw([reg], "bits", bit=bit, width=width) == (reg >> bit) & ((1 << width) - 1)
    assert decode_raw([reg], "bool", bit=bit) == bool(reg >> bit & 1)


@given(
    raw=st.integers(-(2**15), 2**15 - 1),
    scale=st.sampled_from([0.1, 0.01, 10.0, 0.5]),
    offset=st.sampled_from([0.0, -40.0, 273.15]),
)
def test_scale_offset_round_trip(raw, scale, offset):
    value = apply_scale(raw, scale, offset)
    assert unscale(float(value), "int16", scale, offset) == raw


def test_known_orders_of_one_float():
    # 123.456 as float32 is 0x42F6E979: ABCD, CDAB, BADC, DCBA.
    assert struct.pack(">f", 123.456).hex() == "42f6e979"
    assert encode_raw(123.456, "float32", "big", "big") == [0x42F6, 0xE979]
    assert encode_raw(123.456, "float32", "big", "little") == [0xE979, 0x42F6]
    assert encode_raw(123.456, "float32", "little", "big") == [0xF642, 0x79E9]
    assert encode_raw(123.456, "float32", "little", "little") == [0x79E9, 0xF642]
    assert decode_raw([0xFFFF], "int16") == -1
    assert decode_raw([0x0001, 0x0000], "uint32", word_order="little") == 1
    assert decode_raw([1], "bool") is True
    assert math.isnan(decode_raw([0x7FC0, 0], "float32"))
    assert apply_scale(7, 1, 0) == 7
    assert isinstance(apply_scale(7, 1, 0), int)


def test_encode_refuses_what_does_not_fit():
    with pytest.raises(ValueError):
        encode_raw(70000, "uint16")
    with pytest.raises(ValueError):
        encode_raw(-1, "uint32")
    with pytest.raises(ValueError):
        encode_raw(1.5, "int16")
    with pytest.raises(ValueError):
        encode_raw("too long", "string", count=2)
    with pytest.raises(ValueError):
        encode_raw(3, "bits")
    with pytest.raises(ValueError):
        decode_raw([1], "float32")


@pytest.mark.parametrize(("byte_order", "word_order"), ORDERS)
@pytest.mark.parametrize("dtype", [*sorted(INT_RANGES), "float32", "float64"])
@pytest.mark.parametrize(("scale", "offset"), [(1.0, 0.0), (0.1, -40.0)])
@given(data=st.data())
def test_fast_decoders_match_the_reference(dtype, byte_order, word_order, scale, offset, data):
    from drivers.modbus.codec import make_decoder

    regs = data.draw(
        st.lists(st.integers(0, 0xFFFF), min_size=register_count(dtype), max_size=register_count(dtype))
    )
    ref = apply_scale(decode_raw(regs, dtype, byte_order, word_order), scale, offset)
    got = make_decoder(dtype, byte_order, word_order, scale=scale, offset=offset)(regs)
    if isinstance(ref, float) and math.isnan(ref):
        assert math.isnan(got)
    else:
        assert got == ref
        assert type(got) is type(ref)


@pytest.mark.parametrize("count", [1, 2, 5])
def test_string_write_never_spills_into_the_next_register(count: int) -> None:
    """A string point of ``count`` registers encodes to exactly that many registers; one character
    more than fits is refused, not written over the neighbouring register."""
    fits = "A" * (2 * count)
    regs = encode_raw(fits, "string", count=count)
    assert len(regs) == count
    assert decode_raw(regs, "string") == fits
    short = encode_raw("B", "string", count=count)
    assert len(short) == count
    assert short[0] == 0x4200
    assert all(r == 0 for r in short[1:])
    with pytest.raises(ValueError, match="longer"):
        encode_raw(fits + "C", "string", count=count)


def test_bool_encodes_as_one_and_zero() -> None:
    assert encode_raw(True, "bool") == [1]
    assert encode_raw(False, "bool") == [0]
    assert encode_raw(1, "bool") == [1]
    assert encode_raw(0, "bool") == [0]
    assert decode_raw([1], "bool") is True
    assert decode_raw([0], "bool") is False
    assert decode_raw([0b100], "bool", bit=2) is True
    assert decode_raw([0b011], "bool", bit=2) is False


@pytest.mark.parametrize("dtype", ["int16", "uint16", "int32", "uint32", "int64", "uint64"])
def test_whole_number_floats_write_as_integers(dtype: str) -> None:
    """A setpoint of 42.0 (how JSON and YAML often carry it) writes the integer 42; 42.5 is refused."""
    assert encode_raw(42.0, dtype) == encode_raw(42, dtype)
    assert decode_raw(encode_raw(42.0, dtype), dtype) == 42
    with pytest.raises(ValueError, match="not an integer"):
        encode_raw(42.5, dtype)
