"""The three incremental framers under random, mutated and split byte streams (hypothesis)."""

from __future__ import annotations

import datetime as dt
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.nmea import sentences as nmea
from drivers.pms import frames as pms
from drivers.sds011 import frames as sds
from kernel.errors import FrameError

u16 = st.integers(0, 0xFFFF)
flips = st.lists(st.tuples(st.integers(0, 100), st.integers(0, 255)), min_size=1)
no_pms_start = st.binary(max_size=40).filter(lambda b: pms.START not in b)
pms_measurements = st.builds(pms.Measurement, st.tuples(*[u16] * 12), u16)
sds_measurements = st.builds(sds.Measurement, u16, u16, u16)
sds_replies = st.builds(sds.Reply, st.integers(0, 255), st.tuples(*[st.integers(0, 255)] * 3), u16)
rmcs = st.builds(
    nmea.Rmc,
    talker=st.sampled_from(["GP", "GN", "GL"]),
    when=st.datetimes(
        dt.datetime(2000, 1, 1), dt.datetime(2079, 12, 31), timezones=st.just(dt.timezone.utc)
    ).map(lambda t: t.replace(microsecond=t.microsecond // 10000 * 10000)),
    valid=st.booleans(),
    lat=st.floats(-89.99, 89.99).map(lambda v: round(v, 6)),
    lon=st.floats(-179.99, 179.99).map(lambda v: round(v, 6)),
    speed_kn=st.floats(0, 200).map(lambda v: round(v, 3)),
    course_deg=st.floats(0, 359.99).map(lambda v: round(v, 2)),
    mode=st.sampled_from(["A", "D", "N"]),
)
ggas = st.builds(
    nmea.Gga,
    talker=st.sampled_from(["GP", "GN"]),
    time=st.times().map(lambda t: t.replace(microsecond=t.microsecond // 10000 * 10000)),
    lat=st.floats(-89.99, 89.99).map(lambda v: round(v, 6)),
    lon=st.floats(-179.99, 179.99).map(lambda v: round(v, 6)),
    quality=st.sampled_from([0, 1, 2, 4, 5, 6]),
    satellites=st.integers(0, 40),
    hdop=st.floats(0.5, 50).map(lambda v: round(v, 2)),
    altitude_m=st.floats(-100, 5000).map(lambda v: round(v, 1)),
)


def feed_in_chunks(framer, data: bytes, cuts: list[int]) -> list:
    """Feed ``data`` split at the given cut points (modulo its length)."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    out: list = []
    for a, b in itertools.pairwise(points):
        out.extend(framer.feed(data[a:b]))
    return out


def mutate(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    buf = bytearray(data)
    for pos, val in flips:
        if buf:
            buf[pos % len(buf)] = val
    return bytes(buf)


# --- PMS ----------------------------------------------------------------------------------------


@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=10))
def test_pms_random_bytes_never_raise(data, cuts):
    framer = pms.PmsFramer()
    frames = feed_in_chunks(framer, data, cuts)
    assert framer.stats.frames == len(frames)
    assert framer.pending() <= pms.FRAME_SIZE


@given(
    st.lists(st.tuples(no_pms_start, pms_measurements), max_size=6),
    no_pms_start,
    st.lists(st.integers(0, 1000), max_size=12),
)
def test_pms_every_frame_in_noise_is_found(items, tail, cuts):
    stream = b"".join(noise + pms.encode_measurement(m) for noise, m in items) + tail
    framer = pms.PmsFramer()
    got = feed_in_chunks(framer, stream, cuts)
    assert got == [m for _, m in items]
    assert framer.stats.garbage_bytes >= sum(len(n) for n, _ in items) - len(items)


@given(pms_measurements, pms_measurements, flips)
def test_pms_mutated_frame_dropped_and_next_found(first, second, flips):
    broken = mutate(pms.encode_measurement(first), flips)
    framer = pms.PmsFramer()
    got = framer.feed(broken + pms.encode_measurement(second))
    assert got[-1] == second
    assert framer.stats.frames == len(got)
    try:
        still_valid = [pms.decode(broken)]
    except FrameError:
        still_valid = []
    if not still_valid:
        assert got == [second]
        assert framer.stats.bad + framer.stats.garbage_bytes > 0


def test_pms_bad_checksum_and_truncation_are_counted():
    good = pms.encode_measurement(pms.Measurement(tuple(range(12)), 0))
    bad = bytearray(good)
    bad[10] ^= 0xFF
    framer = pms.PmsFramer()
    assert framer.feed(bytes(bad) + good[:12] + good) == [pms.decode(good)]
    assert framer.stats.checksum == 1
    assert framer.stats.truncated == 1


def test_pms_command_encoding_matches_datasheet():
    assert pms.encode_command(pms.CMD_MODE, 0).hex() == "424de100000170"
    assert pms.encode_command(pms.CMD_READ).hex() == "424de200000171"
    assert pms.encode_command(pms.CMD_SLEEP, 0).hex() == "424de400000173"
    assert pms.decode(pms.encode_ack(pms.CMD_MODE, 1)) == pms.Ack(pms.CMD_MODE, 1)


# --- SDS011 -------------------------------------------------------------------------------------


@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=10))
def test_sds_random_bytes_never_raise(data, cuts):
    framer = sds.Sds011Framer()
    frames = feed_in_chunks(framer, data, cuts)
    assert framer.stats.frames == len(frames)
    assert framer.pending() < sds.REPLY_SIZE


@given(
    st.lists(
        st.tuples(
            st.binary(max_size=30).filter(lambda b: sds.HEAD not in b),
            st.one_of(sds_measurements, sds_replies),
        ),
        max_size=6,
    ),
    st.lists(st.integers(0, 1000), max_size=12),
)
def test_sds_every_frame_in_noise_is_found(items, cuts):
    def enc(f):
        return sds.encode_measurement(f) if isinstance(f, sds.Measurement) else sds.encode_reply(f)

    stream = b"".join(noise + enc(f) for noise, f in items)
    framer = sds.Sds011Framer()
    assert feed_in_chunks(framer, stream, cuts) == [f for _, f in items]


@given(sds_measurements, sds_measurements, flips)
def test_sds_mutated_frame_dropped_and_next_found(first, second, flips):
    framer = sds.Sds011Framer()
    broken = mutate(sds.encode_measurement(first), flips)
    got = framer.feed(broken + sds.encode_measurement(second))
    assert got[-1] == second
    try:
        sds.decode(broken)
    except FrameError:
        assert got == [second]
        assert framer.stats.bad + framer.stats.garbage_bytes > 0


def test_sds_host_commands_match_datasheet_and_decode():
    assert sds.query_command().hex() == "aab404000000000000000000000000ffff02ab"
    assert sds.sleep_command(True).hex() == "aab406010000000000000000000000ffff05ab"
    framer = sds.Sds011Framer(accept=(sds.CMD_HOST,))
    (cmd,) = framer.feed(b"\x00\xaa" + sds.reporting_command(True))
    assert isinstance(cmd, sds.Command)
    assert cmd.command == sds.SET_REPORTING
    assert cmd.data[1:3] == (1, 1)


def test_sds_bad_checksum_counted():
    good = sds.encode_measurement(sds.Measurement(250, 400, 0xA160))
    bad = bytearray(good)
    bad[8] ^= 1
    framer = sds.Sds011Framer()
    assert framer.feed(bytes(bad) + good) == [sds.decode(good)]
    assert framer.stats.checksum == 1


# --- NMEA ---------------------------------------------------------------------------------------


@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=10))
def test_nmea_random_bytes_never_raise(data, cuts):
    framer = nmea.NmeaFramer()
    assert framer.stats.frames == len(feed_in_chunks(framer, data, cuts))
    assert framer.pending() < nmea.MAX_SENTENCE


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=120))
def test_nmea_random_ascii_sentences_never_raise(body):
    framer = nmea.NmeaFramer()
    framer.feed(nmea.wrap(body))
    framer.feed(("$" + body + "\r\n").encode())
    assert framer.stats.frames + framer.stats.bad >= 1


@given(
    st.lists(
        st.tuples(st.binary(max_size=30).filter(lambda b: not {36, 33} & set(b)), st.one_of(rmcs, ggas)),
        max_size=6,
    ),
    st.lists(st.integers(0, 1000), max_size=12),
)
@settings(deadline=None)
def test_nmea_every_sentence_in_noise_is_found(items, cuts):
    def enc(s):
        return nmea.encode_rmc(s) if isinstance(s, nmea.Rmc) else nmea.encode_gga(s)

    stream = b"".join(noise + enc(s) for noise, s in items)
    framer = nmea.NmeaFramer()
    got = feed_in_chunks(framer, stream, cuts)
    assert len(got) == len(items)
    for g, (_, want) in zip(got, items, strict=True):
        assert type(g) is type(want)
        assert abs(g.lat - want.lat) < 1e-6
        assert abs(g.lon - want.lon) < 1e-6
        if isinstance(want, nmea.Rmc):
            assert g.when == want.when
            assert g.valid == want.valid


@given(rmcs, rmcs, st.lists(st.tuples(st.integers(0, 70), st.integers(32, 126)), min_size=1))
@settings(deadline=None)
def test_nmea_mutated_sentence_dropped_and_next_found(first, second, flips):
    raw = nmea.encode_rmc(first)
    broken = mutate(raw[:-2], flips) + b"\r\n"
    framer = nmea.NmeaFramer()
    got = framer.feed(broken + nmea.encode_rmc(second))
    assert got[-1].when == second.when
    assert framer.stats.frames == len(got)
    try:
        nmea.parse(broken)
    except FrameError:
        assert len(got) == 1
        assert framer.stats.bad + framer.stats.garbage_bytes > 0


def test_nmea_reference_sentences():
    gga = nmea.parse(b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n")
    assert isinstance(gga, nmea.Gga)
    assert abs(gga.lat - 48.1173) < 1e-9
    assert gga.quality == 1
    assert gga.satellites == 8
    rmc = nmea.parse(b"$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A")
    assert isinstance(rmc, nmea.Rmc)
    assert rmc.when == dt.datetime(1994, 3, 23, 12, 35, 19, tzinfo=dt.timezone.utc)
    assert rmc.time_usable


def test_nmea_counts_each_fault_kind():
    good = b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n"
    framer = nmea.NmeaFramer()
    stream = good.replace(b"*47", b"*48") + good[:30] + good + b"$" + b"A" * 100 + b"\r\n" + good
    assert len(framer.feed(stream)) == 2
    assert framer.stats.checksum == 1
    assert framer.stats.truncated == 1
    assert framer.stats.length >= 1
