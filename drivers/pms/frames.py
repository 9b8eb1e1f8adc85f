"""Plantower PMS5003 / PMS7003 frames: decode, encode, commands, and an incremental framer.

Facts from the Plantower "PMS5003 series data manual" V2.3 (2016) and the PMS7003 manual V2.5
(same transport protocol), as published by Plantower and mirrored at
https://usermanual.wiki/Pdf/plantowerpms5003manualannotated.626592918/help:

- 9600 bit/s, 8N1. Every frame starts with 0x42 0x4D, then a 16-bit big-endian frame length
  counting the data and check bytes, then the data words, then a 16-bit check code equal to the
  low 16 bits of the sum of every byte before it (start characters included).
- The measurement frame has length 2 x 13 + 2 = 28 (32 bytes in all). Data 1-3: PM1.0, PM2.5,
  PM10 in ug/m3 at CF=1 ("standard particle", for factory environments); data 4-6: the same under
  atmospheric environment; data 7-12: particles beyond 0.3, 0.5, 1.0, 2.5, 5.0 and 10 um per 0.1 L
  of air; data 13: reserved (PMS7003 owners report a firmware version and an error code there;
  the manuals found say "reserved", so the driver does not rely on it).
- Host commands are 7 bytes: 0x42 0x4D, CMD, DATAH, DATAL, check code (16 bits, sum of the first
  five bytes). CMD 0xE2 reads one frame in passive mode; 0xE1 sets the mode (data 0 passive,
  1 active); 0xE4 sleeps (data 0) or wakes (data 1). The sensor acknowledges 0xE1 and 0xE4 with
  an 8-byte frame of length 4 whose data are the command and its data byte.
- Active mode is the default after power-up: a frame every 2.3 s when the concentration is steady
  ("stable mode"), every 200-800 ms when it changes fast. Readings are stable 30 s after waking.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from drivers.serial_sensors.framing import FrameStats
from kernel.errors import FrameError

START = b"\x42\x4d"
DATA_LENGTH = 28  # measurement frame: 13 data words + check word
ACK_LENGTH = 4  # acknowledgement of a mode or sleep command
FRAME_SIZE = 4 + DATA_LENGTH

CMD_READ = 0xE2
CMD_MODE = 0xE1
CMD_SLEEP = 0xE4

POINTS: tuple[tuple[str, str], ...] = (
    ("pm1_0_cf1", "ug/m3"),
    ("pm2_5_cf1", "ug/m3"),
    ("pm10_cf1", "ug/m3"),
    ("pm1_0", "ug/m3"),
    ("pm2_5", "ug/m3"),
    ("pm10", "ug/m3"),
    ("n0_3", "1/0.1L"),
    ("n0_5", "1/0.1L"),
    ("n1_0", "1/0.1L"),
    ("n2_5", "1/0.1L"),
    ("n5_0", "1/0.1L"),
    ("n10", "1/0.1L"),
)


def checksum(data: bytes) -> int:
    """The check code: the low 16 bits of the sum of the bytes."""
    return sum(data) & 0xFFFF


@dataclass(frozen=True)
class Measurement:
    """One measurement frame, decoded. ``values`` follow :data:`POINTS`."""

    values: tuple[int, ...]
    reserved: int = 0

    def as_dict(self) -> dict[str, int]:
        """Point name -> value."""
        return {name: v for (name, _), v in zip(POINTS, self.values, strict=True)}


@dataclass(frozen=True)
class Ack:
    """The sensor's acknowledgement of a mode or sleep command."""

    command: int
    data: int


Frame = Measurement | Ack


def encode_measurement(m: Measurement) -> bytes:
    """The 32-byte frame a sensor sends for ``m``."""
    body = START + struct.pack(">H12HH", DATA_LENGTH, *m.values, m.reserved)
    return body + struct.pack(">H", checksum(body))


def encode_ack(command: int, data: int) -> bytes:
    """The 8-byte acknowledgement a sensor sends for a command."""
    body = START + struct.pack(">HBB", ACK_LENGTH, command & 0xFF, data & 0xFF)
    return body + struct.pack(">H", checksum(body))


def encode_command(command: int, data: int = 0) -> bytes:
    """A 7-byte host command (``CMD_READ``, ``CMD_MODE``, ``CMD_SLEEP``)."""
    body = START + struct.pack(">BH", command & 0xFF, data & 0xFFFF)
    return body + struct.pack(">H", checksum(body))


def decode(frame: bytes) -> Frame:
    """Decode one complete frame; :class:`FrameError` when it is not a valid one."""
    if len(frame) < 8 or frame[:2] != START:
        raise FrameError(f"not a PMS frame: {frame[:8].hex()}")
    length = int.from_bytes(frame[2:4], "big")
    if len(frame) != 4 + length or length not in (DATA_LENGTH, ACK_LENGTH):
        raise FrameError(f"PMS frame length {length} with {len(frame)} bytes")
    want = int.from_bytes(frame[-2:], "big")
    if checksum(frame[:-2]) != want:
        raise FrameError(f"PMS check code {want:#06x}, computed {checksum(frame[:-2]):#06x}")
    if length == ACK_LENGTH:
        return Ack(frame[4], frame[5])
    words = struct.unpack(">13H", frame[4:30])
    return Measurement(tuple(words[:12]), words[12])


class PmsFramer:
    """Cuts a byte stream from a PMS sensor into frames; resynchronises on anything else.

    Feed it whatever the port gave; it returns the complete valid frames and keeps a partial one.
    A frame that fails is dropped one byte at a time, so a real frame hidden behind a false start
    is still found. The buffer never holds more than one frame.
    """

    def __init__(self) -> None:
        self.stats = FrameStats()
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        """Add bytes; return the frames completed by them."""
        self._buf += data
        out: list[Frame] = []
        buf = self._buf
        while True:
            start = buf.find(START)
            if start < 0:
                keep = 1 if buf[-1:] == START[:1] else 0
                self.stats.garbage_bytes += len(buf) - keep
                del buf[: len(buf) - keep]
                return out
            if start:
                self.stats.garbage_bytes += start
                del buf[:start]
            if len(buf) < 4:
                return out
            length = int.from_bytes(buf[2:4], "big")
            if length not in (DATA_LENGTH, ACK_LENGTH):
                self.stats.length += 1
                del buf[:1]
                continue
            if len(buf) < 4 + length:
                return out
            frame = bytes(buf[: 4 + length])
            try:
                out.append(decode(frame))
            except FrameError:
                # Another start inside the frame means this one was cut short.
                if frame.find(START, 2) > 0:
                    self.stats.truncated += 1
                else:
                    self.stats.checksum += 1
                del buf[:1]
                continue
            self.stats.frames += 1
            del buf[: 4 + length]

    def pending(self) -> int:
        """Bytes held while waiting for the rest of a frame."""
        return len(self._buf)
