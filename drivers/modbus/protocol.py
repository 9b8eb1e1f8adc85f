"""Modbus application layer (PDUs) and the two framings: RTU (address + PDU + CRC) and TCP (MBAP).

Written from the Modbus Application Protocol Specification V1.1b3 and the Modbus over Serial Line
Specification V1.02 (modbus.org); CRC-16/MODBUS is polynomial 0xA001 reflected, initial 0xFFFF.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from kernel.errors import DeviceRefused, FrameError

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """CRC-16/MODBUS of ``data`` (sent low byte first)."""
    crc = 0xFFFF
    for b in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ b) & 0xFF]
    return crc


def rtu_frame(unit: int, pdu: bytes) -> bytes:
    """Address + PDU + CRC (low byte first)."""
    body = bytes([unit]) + pdu
    return body + crc16(body).to_bytes(2, "little")


def check_crc(frame: bytes) -> None:
    """:class:`FrameError` unless the frame's last two bytes are its CRC."""
    if len(frame) < 4 or crc16(frame[:-2]) != int.from_bytes(frame[-2:], "little"):
        raise FrameError(f"CRC error in {frame.hex()}")


# -- requests -----------------------------------------------------------------------------------
def read_request(fc: int, address: int, count: int) -> bytes:
    """PDU of a read (function codes 1 to 4)."""
    return struct.pack(">BHH", fc, address, count)


def write_coil_request(address: int, value: bool) -> bytes:
    """PDU of write single coil (5)."""
    return struct.pack(">BHH", 5, address, 0xFF00 if value else 0)


def write_register_request(address: int, value: int) -> bytes:
    """PDU of write single register (6)."""
    return struct.pack(">BHH", 6, address, value)


def write_coils_request(address: int, values: Sequence[bool]) -> bytes:
    """PDU of write multiple coils (15)."""
    data = pack_bits(values)
    return struct.pack(">BHHB", 15, address, len(values), len(data)) + data


def write_registers_request(address: int, values: Sequence[int]) -> bytes:
    """PDU of write multiple registers (16)."""
    return struct.pack(f">BHHB{len(values)}H", 16, address, len(values), 2 * len(values), *values)


def pack_bits(values: Sequence[bool]) -> bytes:
    """Coil values, LSB of the first byte first."""
    out = bytearray((len(values) + 7) // 8)
    for i, v in enumerate(values):
        if v:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)


def unpack_bits(data: bytes, count: int) -> list[bool]:
    """Inverse of :func:`pack_bits`."""
    return [bool(data[i // 8] >> (i % 8) & 1) for i in range(count)]


# -- responses ----------------------------------------------------------------------------------
def rtu_response_length(head: bytes) -> int | None:
    """Total RTU frame length from its first three bytes (None when the function code is unknown)."""
    fc = head[1]
    if fc & 0x80:
        return 5
    if fc in (1, 2, 3, 4):
        return 3 + head[2] + 2
    if fc in (5, 6, 15, 16):
        return 8
    return None


def rtu_request_length(head: bytes) -> int | None:
    """Total RTU request length from its first seven bytes (None when the function code is unknown)."""
    fc = head[1]
    if fc in (1, 2, 3, 4, 5, 6):
        return 8
    if fc in (15, 16):
        return 7 + head[6] + 2 if len(head) >= 7 else 9
    return None


def parse_response(request: bytes, response: bytes) -> list[int] | list[bool]:
    """Values from a response PDU to ``request``; refusals raise :class:`DeviceRefused`."""
    fc = request[0]
    if not response:
        raise FrameError("empty response")
    if response[0] == fc | 0x80:
        code = response[1] if len(response) > 1 else 0
        name = EXCEPTION_NAMES.get(code, "unknown exception")
        raise DeviceRefused(f"exception {code} ({name}) to function {fc}", code)
    if response[0] != fc:
        raise FrameError(f"response function {response[0]} to request function {fc}")
    if fc in (1, 2, 3, 4):
        count = struct.unpack(">H", request[3:5])[0]
        nbytes = (count + 7) // 8 if fc in (1, 2) else 2 * count
        if len(response) != 2 + nbytes or response[1] != nbytes:
            raise FrameError(f"function {fc}: expected {nbytes} data bytes, got {len(response) - 2}")
        if fc in (1, 2):
            return unpack_bits(response[2:], count)
        return list(struct.unpack(f">{count}H", response[2:]))
    if response != request[:5]:
        raise FrameError(f"write echo {response.hex()} does not match request {request[:5].hex()}")
    return []
