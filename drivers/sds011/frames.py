"""Nova Fitness SDS011 frames: decode, encode, commands, and an incremental framer.

Facts from Nova Fitness "SDS011 Laser Dust Sensor Control Protocol V1.3" (2015-07-20) and the
SDS011 datasheet V1.3 (https://www.scribd.com/document/536273202/SDS011-Laser-Dust-Sensor-Control-Protocol-V1-3,
https://ali.retronic.us/dust-detection-sensor):

- 9600 bit/s 8N1; in active reporting (the factory default) one data frame per second.
- Sensor -> host frames are 10 bytes: 0xAA, command, 6 data bytes, checksum, 0xAB. The checksum
  is the low 8 bits of the sum of the 6 data bytes. Command 0xC0 is a measurement: PM2.5 low,
  PM2.5 high, PM10 low, PM10 high (tenths of ug/m3), then the 2-byte device id. Command 0xC5 is the
  reply to a setting: data byte 1 repeats the command (2 reporting mode, 6 sleep/work, 8 working
  period, 7 firmware), then its values, then the device id.
- Host -> sensor frames are 19 bytes: 0xAA, 0xB4, 13 data bytes (data 1 = command, then its
  arguments), the 2-byte device id (0xFFFF = every sensor), checksum (low 8 bits of the sum of the
  15 bytes after 0xB4), 0xAB. Command 2: reporting mode (data 2: 0 query, 1 set; data 3: 0 active,
  1 query mode). Command 4: query data, answered by a 0xC0 frame. Command 6: sleep and work
  (data 2: 0 query, 1 set; data 3: 0 sleep, 1 work). Settings survive power off.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.serial_sensors.framing import FrameStats
from kernel.errors import FrameError

HEAD = 0xAA
TAIL = 0xAB
CMD_DATA = 0xC0
CMD_REPLY = 0xC5
CMD_HOST = 0xB4
REPLY_SIZE = 10
HOST_SIZE = 19

# Data byte 1 of host commands and of 0xC5 replies.
SET_REPORTING = 2
QUERY_DATA = 4
SET_SLEEP = 6
SET_PERIOD = 8
ALL_SENSORS = 0xFFFF


def checksum(data: bytes) -> int:
    """Low 8 bits of the sum of the data bytes."""
    return sum(data) & 0xFF


@dataclass(frozen=True)
class Measurement:
    """One 0xC0 frame: PM2.5 and PM10 in tenths of ug/m3, and the sensor's id."""

    pm2_5_x10: int
    pm10_x10: int
    device_id: int

    @property
    def pm2_5(self) -> float:
        """PM2.5 in ug/m3."""
        return self.pm2_5_x10 / 10.0

    @property
    def pm10(self) -> float:
        """PM10 in ug/m3."""
        return self.pm10_x10 / 10.0


@dataclass(frozen=True)
class Reply:
    """A 0xC5 reply: which setting, its values (data bytes 2-4), and the sensor's id."""

    command: int
    values: tuple[int, int, int]
    device_id: int


@dataclass(frozen=True)
class Command:
    """A 0xB4 host command: data bytes 1-13 and the target id."""

    data: tuple[int, ...]
    device_id: int

    @property
    def command(self) -> int:
        """Data byte 1: which command."""
        return self.data[0]


Frame = Measurement | Reply | Command


def encode_measurement(m: Measurement) -> bytes:
    """The 10-byte 0xC0 frame of ``m``."""
    data = bytes(
        [m.pm2_5_x10 & 0xFF, m.pm2_5_x10 >> 8 & 0xFF, m.pm10_x10 & 0xFF, m.pm10_x10 >> 8 & 0xFF]
    ) + m.device_id.to_bytes(2, "big")
    return bytes([HEAD, CMD_DATA]) + data + bytes([checksum(data), TAIL])


def encode_reply(r: Reply) -> bytes:
    """The 10-byte 0xC5 frame of ``r``."""
    data = bytes([r.command, *r.values]) + r.device_id.to_bytes(2, "big")
    return bytes([HEAD, CMD_REPLY]) + data + bytes([checksum(data), TAIL])


def encode_command(command: int, args: tuple[int, ...] = (), device_id: int = ALL_SENSORS) -> bytes:
    """A 19-byte host command; ``args`` are data bytes 2 onwards (zero-filled to 13 bytes)."""
    data = bytes([command, *args]).ljust(13, b"\x00")[:13] + device_id.to_bytes(2, "big")
    return bytes([HEAD, CMD_HOST]) + data + bytes([checksum(data), TAIL])


def query_command(device_id: int = ALL_SENSORS) -> bytes:
    """Ask for one measurement (answered by a 0xC0 frame)."""
    return encode_command(QUERY_DATA, (), device_id)


def reporting_command(query_mode: bool, device_id: int = ALL_SENSORS) -> bytes:
    """Switch to query mode (True) or active reporting (False)."""
    return encode_command(SET_REPORTING, (1, 1 if query_mode else 0), device_id)


def sleep_command(sleep: bool, device_id: int = ALL_SENSORS) -> bytes:
    """Put the sensor to sleep (True, fan and laser off) or wake it (False)."""
    return encode_command(SET_SLEEP, (1, 0 if sleep else 1), device_id)


def _size(command: int) -> int | None:
    if command in (CMD_DATA, CMD_REPLY):
        return REPLY_SIZE
    if command == CMD_HOST:
        return HOST_SIZE
    return None


def decode(frame: bytes) -> Frame:
    """Decode one complete frame (either direction); :class:`FrameError` when it is not valid."""
    if len(frame) < 2 or frame[0] != HEAD:
        raise FrameError(f"not an SDS011 frame: {frame[:4].hex()}")
    size = _size(frame[1])
    if size is None or len(frame) != size:
        raise FrameError(f"SDS011 command {frame[1]:#04x} with {len(frame)} bytes")
    if frame[-1] != TAIL:
        raise FrameError(f"SDS011 frame ends with {frame[-1]:#04x}, not 0xab")
    data = frame[2:-2]
    if checksum(data) != frame[-2]:
        raise FrameError(f"SDS011 checksum {frame[-2]:#04x}, computed {checksum(data):#04x}")
    dev = int.from_bytes(data[-2:], "big")
    if frame[1] == CMD_DATA:
        return Measurement(data[0] | data[1] << 8, data[2] | data[3] << 8, dev)
    if frame[1] == CMD_REPLY:
        return Reply(data[0], (data[1], data[2], data[3]), dev)
    return Command(tuple(data[:13]), dev)


class Sds011Framer:
    """Cuts an SDS011 byte stream into frames; resynchronises on garbage, cuts and bad checksums.

    ``accept`` names the command bytes expected in this direction: the driver takes 0xC0 and 0xC5
    from the sensor, the emulator 0xB4 from the host. A failed candidate is dropped one byte at a
    time, so a real frame behind a false 0xAA is still found.
    """

    def __init__(self, accept: tuple[int, ...] = (CMD_DATA, CMD_REPLY)) -> None:
        self.stats = FrameStats()
        self._accept = accept
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        """Add bytes; return the frames completed by them."""
        self._buf += data
        buf = self._buf
        out: list[Frame] = []
        while True:
            start = buf.find(HEAD)
            if start < 0:
                self.stats.garbage_bytes += len(buf)
                buf.clear()
                return out
            if start:
                self.stats.garbage_bytes += start
                del buf[:start]
            if len(buf) < 2:
                return out
            if buf[1] not in self._accept:
                self.stats.garbage_bytes += 1
                del buf[:1]
                continue
            size = _size(buf[1]) or REPLY_SIZE
            if len(buf) < size:
                return out
            frame = bytes(buf[:size])
            try:
                out.append(decode(frame))
            except FrameError:
                self._count_bad(frame)
                del buf[:1]
                continue
            self.stats.frames += 1
            del buf[:size]

    def _count_bad(self, frame: bytes) -> None:
        if frame[-1] != TAIL:
            inner = any(frame[i] == HEAD and frame[i + 1] in self._accept for i in range(1, len(frame) - 1))
            if inner:
                self.stats.truncated += 1
            else:
                self.stats.malformed += 1
        else:
            self.stats.checksum += 1

    def pending(self) -> int:
        """Bytes held while waiting for the rest of a frame."""
        return len(self._buf)
