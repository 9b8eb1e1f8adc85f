"""Codecs: every type in every byte/word order round-trips; scale/offset; known layouts."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.modbus.codec import apply_scale, decode_raw, encode_raw, make_decoder, register_count, unscale

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


def test_register_counts_of_every_type() -> None:
    """How many registers a point occupies decides the read plan and write sizes."""
    assert register_count("bool") == 1
    assert register_count("bits") == 1
    assert register_count("int16") == register_count("uint16") == 1
    assert register_count("float32") == register_count("int32") == register_count("uint32") == 2
    assert register_count("float64") == register_count("int64") == register_count("uint64") == 4
    assert register_count("string") == 1
    assert register_count("string", 8) == 8
    assert len(encode_raw("A", "string")) == 1


def test_strings_from_a_device_are_ascii_with_replacement() -> None:
    """Bytes that are not ASCII become U+FFFD one by one (a garbled name stays visible, never an error)."""
    regs = [0x41C3, 0xA942]  # 'A', 0xC3 0xA9 (UTF-8 e-acute), 'B'
    assert decode_raw(regs, "string") == "A\ufffd\ufffdB"
    assert decode_raw([0x4142, 0x0043], "string") == "AB"  # stops at the first NUL
    assert decode_raw([0x4241, 0x0043], "string", byte_order="little") == "ABC"


def test_bool_on_a_whole_register_is_any_bit_set() -> None:
    assert decode_raw([2], "bool") is True
    assert decode_raw([0x8000], "bool") is True
    assert decode_raw([0], "bool") is False


def test_bit_fields_default_to_one_bit() -> None:
    assert decode_raw([0b111], "bits", bit=1) == 1
    assert decode_raw([0b111], "bits", bit=1, width=2) == 3


def test_refusals_say_what_and_why() -> None:
    """Codec errors reach the technician's screen: they name the value, the type and the limit."""
    with pytest.raises(ValueError, match=r"float32 needs 2 registers, got 1"):
        decode_raw([1], "float32")
    with pytest.raises(ValueError, match=r"70000 does not fit uint16"):
        encode_raw(70000, "uint16")
    with pytest.raises(ValueError, match=r"longer than 4 characters"):
        encode_raw("ABCDE", "string", count=2)
    with pytest.raises(ValueError, match=r"bits values cannot be encoded"):
        encode_raw(1, "bits")
    with pytest.raises(ValueError, match=r"inf is not a finite number"):
        unscale(float("inf"), "int16", 1.0, 0.0)


@pytest.mark.parametrize(("scale", "offset"), [(1.0, 0.0), (0.1, 0.0), (1.0, -40.0), (0.5, 3.0)])
@pytest.mark.parametrize("dtype", ["int16", "uint16", "float32", "uint32"])
def test_fast_decoders_apply_scale_and_offset_each_alone(dtype: str, scale: float, offset: float) -> None:
    """Scale without offset and offset without scale are applied too (not only both or neither)."""
    regs = encode_raw(1000, dtype)
    assert make_decoder(dtype, scale=scale, offset=offset)(regs) == pytest.approx(1000 * scale + offset)
    assert make_decoder(dtype)(regs) == 1000


@pytest.mark.parametrize(
    ("kw", "regs", "expected"),
    [
        ({"dtype": "string"}, [0x4142, 0x4300], "ABC"),
        ({"dtype": "string", "byte_order": "little"}, [0x4241, 0x0043], "ABC"),
        ({"dtype": "bool", "bit": 3}, [0b1000], True),
        ({"dtype": "bool", "bit": 2}, [0b1000], False),
        ({"dtype": "bits", "bit": 4, "width": 3}, [0b1110000], 7),
        ({"dtype": "bits", "bit": 4}, [0b1110000], 1),
    ],
)
def test_decoders_of_strings_and_bits_match_the_reference(kw: dict, regs: list[int], expected: object) -> None:
    decode = make_decoder(**kw)
    assert decode(regs) == expected
    assert decode(regs) == decode_raw(regs, **kw)
