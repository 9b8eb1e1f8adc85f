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


def _bitwise_crc16(data: bytes) -> int:
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def test_crc_table_is_the_reflected_0xa001_polynomial() -> None:
    """The lookup table equals the bit-by-bit CRC of the serial line specification (Appendix B)."""
    table = p._crc_table()
    assert len(table) == 256
    assert table[0] == 0x0000
    assert table[1] == 0xC0C1
    assert table[128] == 0xA001
    assert table[255] == 0x4040
    assert table == p._CRC_TABLE


@given(st.binary(max_size=300))
def test_crc_matches_the_bitwise_reference(data: bytes) -> None:
    assert p.crc16(data) == _bitwise_crc16(data)


def test_crc_check_takes_the_shortest_frame_and_names_the_bad_one() -> None:
    shortest = p.rtu_frame(1, b"\x07")  # address, function, CRC: four bytes
    assert len(shortest) == 4
    p.check_crc(shortest)
    with pytest.raises(FrameError, match="CRC error in 0107"):
        p.check_crc(shortest[:3])
    with pytest.raises(FrameError, match=f"CRC error in {shortest[:-1].hex()}00"):
        p.check_crc(shortest[:-1] + b"\x00")


def test_addresses_and_values_above_32767_are_unsigned() -> None:
    assert p.read_request(3, 40001, 2) == bytes.fromhex("039c410002")
    assert p.write_register_request(40001, 0xFFFF) == bytes.fromhex("069c41ffff")
    assert p.write_coils_request(40001, [True]) == bytes.fromhex("0f9c4100010101")
    assert p.write_registers_request(40001, [0xFFFF]) == bytes.fromhex("109c41000102ffff")


@pytest.mark.parametrize("fc", [1, 2, 3, 4, 5, 6, 15, 16])
def test_exception_responses_to_every_function(fc: int) -> None:
    request = p.read_request(fc, 0, 1) if fc <= 4 else bytes([fc]) + bytes(4)
    with pytest.raises(DeviceRefused, match=f"exception 2 \\(illegal data address\\) to function {fc}"):
        p.parse_response(request, bytes([fc | 0x80, 2]))
    assert p.rtu_response_length(bytes([1, fc | 0x80, 2])) == 5


def test_exception_without_code_or_with_an_unknown_one() -> None:
    request = p.read_request(3, 0, 1)
    with pytest.raises(DeviceRefused, match=r"exception 0 \(unknown exception\)") as info:
        p.parse_response(request, b"\x83")
    assert info.value.code == 0
    with pytest.raises(DeviceRefused, match=r"exception 12 \(unknown exception\)"):
        p.parse_response(request, b"\x83\x0c")


def test_malformed_read_responses_are_frame_errors_that_say_why() -> None:
    request = p.read_request(3, 0, 2)
    with pytest.raises(FrameError, match=r"^empty response$"):
        p.parse_response(request, b"")
    with pytest.raises(FrameError, match="response function 4 to request function 3"):
        p.parse_response(request, bytes.fromhex("040200010002"))
    with pytest.raises(FrameError, match="expected 4 data bytes, got 6"):
        p.parse_response(request, bytes.fromhex("0304000100020003"))  # right count byte, extra data
    with pytest.raises(FrameError, match="expected 4 data bytes, got 4"):
        p.parse_response(request, bytes.fromhex("030500010002"))  # wrong count byte
    inputs = p.read_request(2, 0, 10)
    assert p.parse_response(inputs, bytes.fromhex("02 02 cd 01")) == SPEC_COILS


def test_write_echo_must_be_exactly_the_request_head() -> None:
    request = p.write_register_request(1, 3)
    with pytest.raises(FrameError, match="write echo 060001000300 does not match request 0600010003"):
        p.parse_response(request, bytes.fromhex("060001000300"))


@pytest.mark.parametrize(
    ("head", "length"),
    [(bytes.fromhex("010200"), 8), (bytes.fromhex("010400"), 8), (bytes.fromhex("0110"), 9), (bytes.fromhex("010f"), 9)],
)
def test_rtu_request_length_of_reads_and_short_heads(head: bytes, length: int) -> None:
    """Reads are eight bytes; a multiple write whose byte count has not arrived yet needs at least nine."""
    assert p.rtu_request_length(head) == length


def test_rtu_response_length_of_discrete_inputs_and_input_registers() -> None:
    assert p.rtu_response_length(bytes.fromhex("010202")) == 7
    assert p.rtu_response_length(bytes.fromhex("010404")) == 9
