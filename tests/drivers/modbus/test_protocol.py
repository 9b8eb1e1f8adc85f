"""The Modbus PDU layer against the worked examples of the Modbus Application Protocol
Specification V1.1b3 (section 6) and the serial line specification's CRC example."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.modbus import protocol as p
from kernel.errors import DeviceRefused, FrameError

SPEC_COILS = [True, False, True, True, False, False, True, True, True, False]  # coils 20..29, §6.11


def test_crc_of_the_spec_example() -> None:
    frame = p.rtu_frame(1, bytes.fromhex("0300000001"))
    assert frame.hex() == "010300000001840a"
    p.check_crc(frame)
    with pytest.raises(FrameError):
        p.check_crc(frame[:-1] + bytes([frame[-1] ^ 1]))


def test_pack_bits_matches_the_write_multiple_coils_example() -> None:
    assert p.pack_bits(SPEC_COILS) == bytes.fromhex("cd01")
    assert p.write_coils_request(19, SPEC_COILS) == bytes.fromhex("0f0013000a02cd01")
    assert p.unpack_bits(bytes.fromhex("cd01"), 10) == SPEC_COILS


@pytest.mark.parametrize("count", [1, 7, 8, 9, 16, 17])
def test_coil_byte_count_is_count_over_eight_rounded_up(count: int) -> None:
    """8 coils take one byte and 16 take two: no spare byte when the count divides by 8."""
    values = [i % 3 == 0 for i in range(count)]
    nbytes = (count + 7) // 8
    request = p.write_coils_request(0, values)
    assert request[5] == nbytes
    assert len(request) == 6 + nbytes
    data = p.pack_bits(values)
    assert len(data) == nbytes
    read = p.read_request(1, 0, count)
    assert p.parse_response(read, bytes([1, nbytes]) + data) == values
    with pytest.raises(FrameError):
        p.parse_response(read, bytes([1, nbytes + 1]) + data + b"\x00")


@given(st.lists(st.booleans(), min_size=1, max_size=2000))
def test_bits_round_trip(values: list[bool]) -> None:
    packed = p.pack_bits(values)
    assert p.unpack_bits(packed, len(values)) == values
    assert sum(bin(b).count("1") for b in packed) == sum(values)


def test_read_holding_registers_example() -> None:
    request = p.read_request(3, 107, 3)
    assert request == bytes.fromhex("03006b0003")
    assert p.parse_response(request, bytes.fromhex("0306022b00000064")) == [555, 0, 100]


@pytest.mark.parametrize(
    ("request_pdu", "echo"),
    [
        (p.write_coil_request(172, True), "0500acff00"),
        (p.write_register_request(1, 3), "0600010003"),
        (p.write_coils_request(19, SPEC_COILS), "0f0013000a"),
        (p.write_registers_request(1, [0x000A, 0x0102]), "1000010002"),
    ],
)
def test_write_responses_must_echo_the_request(request_pdu: bytes, echo: str) -> None:
    """A write is confirmed only by its echo (fc, address, value or count); anything else is an error."""
    assert p.parse_response(request_pdu, bytes.fromhex(echo)) == []
    wrong = bytearray.fromhex(echo)
    wrong[4] ^= 0x01
    with pytest.raises(FrameError, match="echo"):
        p.parse_response(request_pdu, bytes(wrong))
    wrong_address = bytearray.fromhex(echo)
    wrong_address[2] ^= 0x01
    with pytest.raises(FrameError, match="echo"):
        p.parse_response(request_pdu, bytes(wrong_address))


def test_write_request_encodings_match_the_spec() -> None:
    assert p.write_coil_request(172, True) == bytes.fromhex("0500acff00")
    assert p.write_coil_request(172, False) == bytes.fromhex("0500ac0000")
    assert p.write_register_request(1, 3) == bytes.fromhex("0600010003")
    assert p.write_registers_request(1, [0x000A, 0x0102]) == bytes.fromhex("100001000204000a0102")


def test_exception_response_is_a_refusal_with_its_code() -> None:
    request = p.read_request(3, 0, 1)
    with pytest.raises(DeviceRefused) as info:
        p.parse_response(request, bytes.fromhex("8302"))
    assert info.value.code == 2
    assert "illegal data address" in str(info.value)
    with pytest.raises(FrameError):
        p.parse_response(request, bytes.fromhex("0402"))


@pytest.mark.parametrize(
    ("head", "length"),
    [
        (bytes.fromhex("018302"), 5),
        (bytes.fromhex("010306"), 11),
        (bytes.fromhex("010102"), 7),
        (bytes.fromhex("010500"), 8),
        (bytes.fromhex("010600"), 8),
        (bytes.fromhex("010f00"), 8),
        (bytes.fromhex("011000"), 8),
        (bytes.fromhex("012b0e"), None),
    ],
)
def test_rtu_response_length(head: bytes, length: int | None) -> None:
    """The serial framer knows where a response ends: exception 5, reads 3+n+2, writes 8 bytes."""
    assert p.rtu_response_length(head) == length


@pytest.mark.parametrize(
    ("frame", "length"),
    [
        (p.rtu_frame(1, p.read_request(3, 0, 10)), 8),
        (p.rtu_frame(1, p.read_request(1, 0, 10)), 8),
        (p.rtu_frame(1, p.write_coil_request(3, True)), 8),
        (p.rtu_frame(1, p.write_register_request(3, 7)), 8),
        (p.rtu_frame(1, p.write_coils_request(19, SPEC_COILS)), 11),
        (p.rtu_frame(1, p.write_registers_request(1, [1, 2, 3])), 15),
    ],
)
def test_rtu_request_length(frame: bytes, length: int) -> None:
    """The emulator's framer knows where a request ends from its first seven bytes."""
    assert len(frame) == length
    assert p.rtu_request_length(frame[:7]) == length
    assert p.rtu_request_length(bytes.fromhex("0107")) is None
