"""NMEA 0183 sentences: checksum, GGA and RMC decoding and encoding, and an incremental framer.

Facts from NMEA 0183 as summarised in public receiver manuals
(https://hhoegl.informatik.hs-augsburg.de/opentheses/da-31/Electronic/GPS/NMEA.htm, the Leica
MK9 technical manual, u-blox receiver descriptions) and, where no page was at hand, from the
author's knowledge of the standard:

- A sentence is ASCII: ``$``, a 2-letter talker (GP, GN, GL, GA, GB, BD) and 3-letter type, comma
  separated fields, ``*``, two hex digits, CR LF; at most 82 characters in all. The checksum is the
  XOR of every character between ``$`` and ``*`` (both excluded).
- GGA: UTC time hhmmss.ss, latitude ddmm.mmmm, N/S, longitude dddmm.mmmm, E/W, fix quality
  (0 invalid, 1 GPS, 2 DGPS, 4 RTK fixed, 5 RTK float, 6 dead reckoning), satellites in use, HDOP,
  altitude above mean sea level, M, geoid separation, M, age of differential data, station id.
- RMC: UTC time, status (A valid, V receiver warning), latitude, N/S, longitude, E/W, speed over
  ground in knots, course over ground, date ddmmyy, magnetic variation, E/W and, since 2.3, a mode
  indicator (A autonomous, D differential, E estimated, N not valid).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from drivers.serial_sensors.framing import FrameStats
from kernel.errors import FrameError

MAX_SENTENCE = 82  # characters, from "$" to CR LF included


def checksum(body: str) -> int:
    """XOR of the characters between ``$`` and ``*``."""
    value = 0
    for ch in body.encode("ascii"):
        value ^= ch
    return value


def wrap(body: str) -> bytes:
    """A full sentence on the wire from its body (what lies between ``$`` and ``*``)."""
    return f"${body}*{checksum(body):02X}\r\n".encode("ascii")


@dataclass(frozen=True)
class Gga:
    """Global positioning fix data."""

    talker: str
    time: dt.time | None
    lat: float | None
    lon: float | None
    quality: int
    satellites: int | None
    hdop: float | None
    altitude_m: float | None


@dataclass(frozen=True)
class Rmc:
    """Recommended minimum data: position, time and date, validity."""

    talker: str
    when: dt.datetime | None
    valid: bool
    lat: float | None
    lon: float | None
    speed_kn: float | None
    course_deg: float | None
    mode: str

    @property
    def time_usable(self) -> bool:
        """A valid fix with a date and time that is not dead reckoning or 'not valid'."""
        return self.valid and self.when is not None and self.mode not in ("N", "E")


@dataclass(frozen=True)
class Other:
    """A well-formed sentence this driver does not use (GSV, VTG, GSA, proprietary ...)."""

    talker: str
    kind: str


Sentence = Gga | Rmc | Other


def _opt_float(text: str) -> float | None:
    return float(text) if text else None


def _opt_int(text: str) -> int | None:
    return int(text) if text else None


def _coord(value: str, hemi: str, deg_digits: int) -> float | None:
    if not value:
        return None
    if hemi not in ("N", "S", "E", "W"):
        raise ValueError(f"hemisphere {hemi!r}")
    dot = value.find(".")
    head = value if dot < 0 else value[:dot]
    if len(head) != deg_digits + 2 or not head.isdigit():
        raise ValueError(f"coordinate {value!r}")
    minutes = float(value[deg_digits:])
    if minutes >= 60:
        raise ValueError(f"coordinate minutes {value!r}")
    deg = int(value[:deg_digits]) + minutes / 60.0
    if deg > (90 if deg_digits == 2 else 180):
        raise ValueError(f"coordinate {value!r} out of range")
    return -deg if hemi in ("S", "W") else deg


def _time(text: str) -> dt.time | None:
    if not text:
        return None
    if len(text) < 6 or not text[:6].isdigit():
        raise ValueError(f"time {text!r}")
    frac = float(text[6:]) if len(text) > 6 else 0.0
    return dt.time(int(text[:2]), int(text[2:4]), int(text[4:6]), round(frac * 1e6) % 1_000_000)


def _date(text: str) -> dt.date | None:
    if not text:
        return None
    if len(text) != 6 or not text.isdigit():
        raise ValueError(f"date {text!r}")
    # Two-digit years, pivoting at 1980 (the GPS epoch).
    yy = int(text[4:6])
    return dt.date(2000 + yy if yy < 80 else 1900 + yy, int(text[2:4]), int(text[:2]))


def _fmt_coord(value: float, deg_digits: int, hemis: str) -> tuple[str, str]:
    hemi = hemis[0] if value >= 0 else hemis[1]
    value = abs(value)
    deg = int(value)
    minutes = (value - deg) * 60.0
    if round(minutes, 5) >= 60.0:
        deg, minutes = deg + 1, 0.0
    return f"{deg:0{deg_digits}d}{minutes:08.5f}", hemi


def parse(line: bytes) -> Sentence:
    """Decode one sentence (with or without CR LF); :class:`FrameError` when malformed."""
    try:
        text = line.decode("ascii").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise FrameError("NMEA sentence with non-ASCII bytes") from exc
    if not text.startswith(("$", "!")) or len(text) > MAX_SENTENCE - 2:
        raise FrameError(f"not an NMEA sentence: {text[:20]!r}")
    star = text.rfind("*")
    if star < 0 or len(text) != star + 3:
        raise FrameError(f"NMEA sentence without checksum: {text[:20]!r}")
    body = text[1:star]
    try:
        want = int(text[star + 1 :], 16)
    except ValueError as exc:
        raise FrameError(f"NMEA checksum {text[star + 1 :]!r} is not hex") from exc
    if checksum(body) != want:
        raise FrameError(f"NMEA checksum {want:02X}, computed {checksum(body):02X}")
    fields = body.split(",")
    address = fields[0]
    if len(address) != 5 or not address.isalnum():
        return Other(address[:2], address[2:])
    talker, kind = address[:2], address[2:]
    try:
        if kind == "GGA" and len(fields) >= 10:
            return _gga(talker, fields)
        if kind == "RMC" and len(fields) >= 10:
            return _rmc(talker, fields)
    except ValueError as exc:
        raise FrameError(f"NMEA {kind}: {exc}") from exc
    if kind in ("GGA", "RMC"):
        raise FrameError(f"NMEA {kind} with {len(fields) - 1} fields")
    return Other(talker, kind)


def _gga(talker: str, f: list[str]) -> Gga:
    return Gga(
        talker=talker,
        time=_time(f[1]),
        lat=_coord(f[2], f[3], 2),
        lon=_coord(f[4], f[5], 3),
        quality=int(f[6] or "0"),
        satellites=_opt_int(f[7]),
        hdop=_opt_float(f[8]),
        altitude_m=_opt_float(f[9]),
    )


def _rmc(talker: str, f: list[str]) -> Rmc:
    if f[2] not in ("A", "V"):
        raise ValueError(f"status {f[2]!r}")
    t, d = _time(f[1]), _date(f[9])
    when = dt.datetime.combine(d, t, tzinfo=dt.timezone.utc) if t is not None and d is not None else None
    return Rmc(
        talker=talker,
        when=when,
        valid=f[2] == "A",
        lat=_coord(f[3], f[4], 2),
        lon=_coord(f[5], f[6], 3),
        speed_kn=_opt_float(f[7]),
        course_deg=_opt_float(f[8]),
        mode=f[12] if len(f) > 12 and f[12] else ("A" if f[2] == "A" else "N"),
    )


def encode_gga(g: Gga) -> bytes:
    """The wire form of a GGA sentence."""
    t = g.time.strftime("%H%M%S.") + f"{g.time.microsecond // 10000:02d}" if g.time else ""
    lat, ns = _fmt_coord(g.lat, 2, "NS") if g.lat is not None else ("", "")
    lon, ew = _fmt_coord(g.lon, 3, "EW") if g.lon is not None else ("", "")
    sats = f"{g.satellites:02d}" if g.satellites is not None else ""
    hdop = f"{g.hdop:.2f}" if g.hdop is not None else ""
    alt = f"{g.altitude_m:.1f}" if g.altitude_m is not None else ""
    return wrap(f"{g.talker}GGA,{t},{lat},{ns},{lon},{ew},{g.quality},{sats},{hdop},{alt},M,-26.0,M,,")


def encode_rmc(r: Rmc) -> bytes:
    """The wire form of an RMC sentence (NMEA 2.3, with the mode indicator)."""
    t = d = ""
    if r.when is not None:
        t = r.when.strftime("%H%M%S.") + f"{r.when.microsecond // 10000:02d}"
        d = r.when.strftime("%d%m%y")
    lat, ns = _fmt_coord(r.lat, 2, "NS") if r.lat is not None else ("", "")
    lon, ew = _fmt_coord(r.lon, 3, "EW") if r.lon is not None else ("", "")
    spd = f"{r.speed_kn:.3f}" if r.speed_kn is not None else ""
    crs = f"{r.course_deg:.2f}" if r.course_deg is not None else ""
    status = "A" if r.valid else "V"
    return wrap(f"{r.talker}RMC,{t},{status},{lat},{ns},{lon},{ew},{spd},{crs},{d},,,{r.mode}")


class NmeaFramer:
    """Cuts an NMEA byte stream into sentences; resynchronises on garbage, cut lines and bad sums.

    A sentence starts at ``$`` (or ``!``) and ends at LF. A new start before the LF means the
    previous sentence was cut short; a line longer than 82 characters is thrown away. The buffer
    never holds more than one sentence.
    """

    def __init__(self) -> None:
        self.stats = FrameStats()
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Sentence]:
        """Add bytes; return the sentences completed by them."""
        self._buf += data
        buf = self._buf
        out: list[Sentence] = []
        while True:
            start = _find_start(buf, 0)
            if start < 0:
                self.stats.garbage_bytes += len(buf)
                buf.clear()
                return out
            if start:
                self.stats.garbage_bytes += start
                del buf[:start]
            end = buf.find(b"\n", 1, MAX_SENTENCE)
            restart = _find_start(buf, 1, end if end > 0 else min(len(buf), MAX_SENTENCE))
            if restart > 0:
                self.stats.truncated += 1
                del buf[:restart]
                continue
            if end < 0:
                if len(buf) >= MAX_SENTENCE:
                    self.stats.length += 1
                    del buf[:1]
                    continue
                return out
            line = bytes(buf[: end + 1])
            del buf[: end + 1]
            try:
                out.append(parse(line))
            except FrameError as exc:
                if "checksum" in str(exc) and "without" not in str(exc):
                    self.stats.checksum += 1
                else:
                    self.stats.malformed += 1
                continue
            self.stats.frames += 1

    def pending(self) -> int:
        """Bytes held while waiting for the end of a sentence."""
        return len(self._buf)


def _find_start(buf: bytearray, begin: int, end: int | None = None) -> int:
    stop = len(buf) if end is None else end
    a = buf.find(b"$", begin, stop)
    b = buf.find(b"!", begin, stop)
    if a < 0:
        return b
    if b < 0:
        return a
    return min(a, b)
