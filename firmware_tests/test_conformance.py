"""Conformance of a Modbus device's firmware with its profile and with the Modbus specification.

References: Modbus Application Protocol Specification V1.1b3 (exception codes 1 illegal function,
2 illegal data address, 3 illegal data value; quantity limits 1-125 registers, 1-2000 bits) and
Modbus over Serial Line V1.02 (CRC-16, frames with a bad CRC are discarded, only the addressed unit
answers), modbus.org.
"""

from __future__ import annotations

import math
import struct

import pytest

from drivers.modbus import protocol as p
from drivers.modbus.profile import BIT_TABLES, READ_FC, Point
from firmware_tests.bench import Bench, plausible_float
from kernel.errors import DeviceRefused, DeviceTimeout, FrameError

REPEATS = 10  # reads timed for the answer-time check


def _tables(bench: Bench) -> list[str]:
    return sorted({pt.table for pt in bench.profile.points})


def _past_end(bench: Bench, table: str) -> int:
    if bench.opts.illegal_address is not None:
        return bench.opts.illegal_address
    end = max(pt.end for pt in bench.profile.points if pt.table == table)
    return min(end, 0xFFFF)


# -- timing (first, so that -x stops early on a slow device) ----------------------------------------
def test_answer_time_within_limit(bench: Bench):
    pt = bench.profile.points[0]
    times = [bench.timed_read(pt) for _ in range(REPEATS)]
    worst = max(times)
    assert worst <= bench.answer_limit_s, (
        f"slowest answer took {worst * 1000:.0f} ms beyond the wire time; limit {bench.answer_limit_s * 1000:.0f} ms"
    )


# -- every point readable, decodable, in range ----------------------------------------------------
def _resolution(point: Point) -> float:
    """Half a step of an integer register after scaling; floats carry their own precision."""
    return abs(point.scale) / 2 if point.type.startswith(("int", "uint")) else 0.0


def test_point_reads_and_decodes_within_range(bench: Bench, point: Point):
    ref = bench.reference(point)
    value = bench.read_point(point)
    if point.type == "string":
        assert isinstance(value, str)
        assert value.isprintable(), f"{point.name}: {value!r} is not printable text"
        return
    if isinstance(value, float):
        problem = plausible_float(value)
        assert problem is None, f"{point.name}: {problem}"
    slack = _resolution(point)
    if not isinstance(value, bool) and isinstance(value, (int, float)):
        if point.min is not None:
            assert value >= point.min - slack, f"{point.name}: {value} below min {point.min}"
        if point.max is not None:
            assert value <= point.max + slack, f"{point.name}: {value} above max {point.max}"
    if ref is None:
        return
    if isinstance(ref, bool):
        assert bool(value) == ref, f"{point.name}: read {value}, expected {ref}"
        return
    assert isinstance(value, (int, float))
    rel = bench.opts.tolerance if point.name in bench.opts.expect else 1e-5
    tol = max(slack, abs(ref) * rel, 1e-6)
    assert math.isclose(float(value), float(ref), abs_tol=tol), (
        f"{point.name}: read {value}, expected {ref} (wrong word or byte order, scale or offset?)"
    )


# -- exceptions -----------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["past-end", "crossing-end"])
def test_illegal_address_is_exception_2(bench: Bench, where: str):
    for table in _tables(bench):
        if where == "past-end":
            address, count = _past_end(bench, table), 1
        else:
            last = max((pt for pt in bench.profile.points if pt.table == table), key=lambda pt: pt.end)
            address, count = last.address, last.registers() + 4
        with pytest.raises(DeviceRefused) as info:
            bench.read_registers(table, address, count)
        assert info.value.code == 2, f"{table} {address}+{count}: exception {info.value.code}, expected 2"


def test_illegal_quantity_is_exception_3(bench: Bench):
    for table in _tables(bench):
        first = min(pt.address for pt in bench.profile.points if pt.table == table)
        too_many = 2001 if table in BIT_TABLES else 126
        with pytest.raises(DeviceRefused) as info:
            bench.read_registers(table, first, too_many)
        assert info.value.code == 3, f"{table} quantity {too_many}: exception {info.value.code}, expected 3"


def test_illegal_function_is_exception_1(bench: Bench):
    fc = bench.opts.illegal_function
    pdu = struct.pack(">BHH", fc, 0, 1)
    answer = bench.run(bench.client.transact(bench.unit, pdu, bench.opts.timeout_s, 2))
    assert answer[0] == fc | 0x80, f"function {fc:#04x} answered {answer.hex()}, expected an exception"
    assert answer[1] == 1, f"function {fc:#04x}: exception {answer[1]}, expected 1 (illegal function)"


# -- framing --------------------------------------------------------------------------------------
def test_answers_carry_a_correct_crc(bench: Bench):
    pt = bench.profile.points[0]
    for _ in range(3):
        try:
            bench.read_registers(pt.table, pt.address, pt.registers())
        except FrameError as exc:
            pytest.fail(f"answer refused: {exc}")


def test_request_with_bad_crc_gets_no_answer(bench: Bench):
    if bench.client.framing != "rtu":
        pytest.skip("TCP (MBAP) frames carry no CRC")
    pt = bench.profile.points[0]
    request = p.read_request(READ_FC[pt.table], pt.address, pt.registers())
    frame = bytearray(p.rtu_frame(bench.unit, request))
    frame[-1] ^= 0xFF

    async def send_and_listen() -> bytes:
        bench.transport.reset_input()
        await bench.transport.write(bytes(frame))
        try:
            return await bench.transport.read(256, bench.answer_limit_s + 0.3)
        except DeviceTimeout:
            return b""

    heard = bench.run(send_and_listen())
    assert heard == b"", f"answered a request with a bad CRC: {heard.hex()}"
    bench.read_registers(pt.table, pt.address, pt.registers())  # and the line still works


def test_other_unit_ids_get_no_answer(bench: Bench):
    other = bench.opts.other_unit or (bench.unit % 247) + 1
    pt = bench.profile.points[0]
    try:
        bench.read_registers(pt.table, pt.address, pt.registers(), unit=other)
    except DeviceTimeout:
        return
    except (FrameError, DeviceRefused) as exc:
        pytest.fail(f"a request for unit {other} got an answer: {exc}")
    pytest.fail(f"a request for unit {other} got an answer")


# -- writes ---------------------------------------------------------------------------------------
def test_writable_point_accepts_valid_and_refuses_invalid(bench: Bench, writable_point: Point | None):
    if writable_point is None:
        assert not any(pt.writable for pt in bench.profile.points)
        return
    pt = writable_point
    original = bench.read_point(pt)
    try:
        if pt.table == "coil" or pt.type == "bool":
            for value in (not original, original):
                bench.write_point(pt, bool(value))
                assert bool(bench.read_point(pt)) == bool(value)
            return
        valid = [v for v in (pt.max, pt.min) if v is not None] or [float(original)]
        for value in valid:
            bench.write_point(pt, value)
            back = bench.read_point(pt)
            assert isinstance(back, (int, float))
            assert math.isclose(back, value, abs_tol=max(_resolution(pt), abs(value) * 1e-5, 1e-6)), (
                f"{pt.name}: wrote {value}, read back {back}"
            )
        span = (pt.max - pt.min) if pt.max is not None and pt.min is not None else 100 * abs(pt.scale)
        invalid = [
            v
            for v in (
                (pt.max + span) if pt.max is not None else None,
                (pt.min - span) if pt.min is not None else None,
            )
            if v is not None
        ]
        for value in invalid:
            before = bench.read_point(pt)
            try:
                regs = bench.encode_point(pt, value)
            except ValueError:
                continue  # cannot even be encoded in the register type: nothing to send
            with pytest.raises(DeviceRefused) as info:
                bench.run(bench.client.write_registers(bench.unit, pt.address, regs, bench.opts.timeout_s))
            assert info.value.code == 3, f"{pt.name}={value}: exception {info.value.code}, expected 3"
            assert bench.read_point(pt) == before, f"{pt.name}: a refused write changed the value"
    finally:
        bench.write_point(pt, original)  # type: ignore[arg-type]
