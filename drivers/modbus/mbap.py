"""MBAP framing (Modbus TCP): one object used by the client and the emulator alike.

An MBAP header is seven bytes: transaction id, protocol id (0 for Modbus), the length of what
follows (unit id + PDU) and the unit id (Modbus Messaging on TCP/IP Implementation Guide V1.0b,
modbus.org). A PDU is at most 253 bytes, so a valid length is 2..254.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from kernel.errors import FrameError

HEADER_LEN = 7
_HEADER = struct.Struct(">HHHB")


@dataclass(frozen=True)
class MbapHeader:
    """A decoded MBAP header; ``pdu_len`` is how many PDU bytes follow it."""

    tid: int
    protocol: int
    length: int
    unit: int

    @property
    def pdu_len(self) -> int:
        """PDU bytes after the header."""
        return self.length - 1


class MbapFramer:
    """Builds and parses MBAP frames; :meth:`next_tid` numbers a client's requests."""

    def __init__(self) -> None:
        self._tid = 0

    def next_tid(self) -> int:
        """The next transaction id (wraps at 16 bits)."""
        self._tid = (self._tid + 1) & 0xFFFF
        return self._tid

    @property
    def tid(self) -> int:
        """The last transaction id handed out."""
        return self._tid

    @staticmethod
    def frame(tid: int, unit: int, pdu: bytes, protocol: int = 0) -> bytes:
        """Header + PDU (``protocol`` other than 0 only to emulate a broken device)."""
        return _HEADER.pack(tid, protocol, len(pdu) + 1, unit) + pdu

    @staticmethod
    def header(head: bytes, strict: bool = True) -> MbapHeader:
        """Decode a 7-byte header; with ``strict``, :class:`FrameError` unless protocol 0 and length 2..254."""
        if len(head) != HEADER_LEN:
            raise FrameError(f"MBAP header needs {HEADER_LEN} bytes, got {len(head)}")
        h = MbapHeader(*_HEADER.unpack(head))
        if strict and (h.protocol != 0 or not 2 <= h.length <= 254):
            raise FrameError(f"bad MBAP header {head.hex()}")
        if h.length < 1:
            raise FrameError(f"bad MBAP length in {head.hex()}")
        return h
