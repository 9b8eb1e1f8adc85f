"""The block decoder agrees with the per-point decoder on any registers, for any mix of points."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.modbus.blockcodec import BlockDecoder
from drivers.modbus.device import DeviceSettings, ModbusDevice
from drivers.modbus.profile import Point, Profile
from kernel.readings import ClockQuality, Priority, Quality, Reading, telemetry_readings

NUMERIC = ["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]
ORDER = st.sampled_from([None, "big", "little"])


@st.composite
def register_point(draw: st.DrawFn, i: int, table: str) -> dict[str, object]:
    kind = draw(st.sampled_from(["numeric", "numeric", "numeric", "string", "bits", "bool"]))
    p: dict[str, object] = {"name": f"p{i}", "table": table, "address": draw(st.integers(0, 60))}
    if kind == "numeric":
        p["type"] = draw(st.sampled_from(NUMERIC))
        p["byte_order"] = draw(ORDER)
        p["word_order"] = draw(ORDER)
        if draw(st.booleans()):
            p["scale"] = draw(st.sampled_from([0.1, 0.01, 2.0, -1.5]))
            p["offset"] = draw(st.sampled_from([0.0, -40.0, 3.25]))
    elif kind == "string":
        p["type"], p["count"] = "string", draw(st.integers(1, 4))
    elif kind == "bits":
        bit = draw(st.integers(0, 12))
        p.update(type="bits", bit=bit, width=draw(st.integers(1, 16 - bit)))
    else:
        p.update(type="bool", bit=draw(st.one_of(st.none(), st.integers(0, 15))))
    if draw(st.booleans()):
        p["min"], p["max"] = -100.0, 5000.0
    return {k: v for k, v in p.items() if v is not None}


@st.composite
def profiles(draw: st.DrawFn) -> Profile:
    table = draw(st.sampled_from(["holding_register", "input_register", "coil"]))
    n = draw(st.integers(1, 12))
    if table == "coil":
        points = [{"name": f"p{i}", "table": table, "address": draw(st.integers(0, 40)), "type": "bool"} for i in range(n)]
    else:
        points = [draw(register_point(i, table)) for i in range(n)]
    return Profile.model_validate(
        {
            "model": "Fuzz",
            "byte_order": draw(st.sampled_from(["big", "little"])),
            "word_order": draw(st.sampled_from(["big", "little"])),
            "max_gap": draw(st.integers(0, 20)),
            "points": points,
        }
    )


def same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def fields(r: Reading) -> tuple[object, ...]:
    return (r.device, r.point, r.ts, r.unit, r.quality, r.priority, r.clock, r.meta)


@given(profile=profiles(), data=st.data())
def test_block_decoding_agrees_with_per_point_decoding(profile: Profile, data: st.DataObject) -> None:
    dev = ModbusDevice(profile, DeviceSettings(name="dev", unit=1))
    for block in dev.planner.plan("fast"):
        if block.table == "coil":
            regs: list[int] | list[bool] = data.draw(st.lists(st.booleans(), min_size=block.count, max_size=block.count))
        else:
            regs = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=block.count, max_size=block.count))
        bulk = dev.decode(block, regs, 1.5, ClockQuality.RTC)
        one_by_one = dev.decode_points(block, regs, 1.5, ClockQuality.RTC)
        assert [fields(r) for r in bulk] == [fields(r) for r in one_by_one]
        assert all(same(a.value, b.value) for a, b in zip(bulk, one_by_one, strict=True))


def test_a_plain_block_is_one_struct_call() -> None:
    points = [Point(name=f"k{i}", table="holding_register", address=i, type="uint16") for i in range(50)]
    profile = Profile(model="P", points=points)
    (block,) = ModbusDevice(profile, DeviceSettings(name="d", unit=1)).planner.plan("fast")
    dec = BlockDecoder(block, profile)
    assert dec._all_struct
    assert not dec._generic
    assert dec.decode(list(range(50))) == list(range(50))


def test_gaps_and_overlaps_fall_back_where_a_struct_cannot_express_them() -> None:
    points = [
        Point(name="a", table="holding_register", address=0, type="float32"),
        Point(name="b", table="holding_register", address=4, type="int16", scale=0.1),
        Point(name="b_low", table="holding_register", address=4, type="bits", bit=0, width=4),
        Point(name="c", table="holding_register", address=5, type="uint32", word_order="little"),
    ]
    profile = Profile(model="P", points=points)
    (block,) = ModbusDevice(profile, DeviceSettings(name="d", unit=1)).planner.plan("fast")
    dec = BlockDecoder(block, profile)
    regs = [0x4148, 0x0000, 0, 0, 0xFFF6, 0x0002, 0x0001]
    assert dec.decode(regs) == [12.5, -1.0, 6, 0x00010002]
    assert len(dec._generic) == 2  # the bit field on b's register, and the little-endian word order


def test_bulk_readings_equal_readings_built_one_by_one() -> None:
    bad = (Quality.BAD, {"reason": "outside plausible range [0, 1]"})
    built = telemetry_readings("m", [("v", "V"), ("i", "A")], [230.5, 7], 10.0, ClockQuality.UNSYNCED, {1: bad})
    assert built == [
        Reading("m", "v", 230.5, 10.0, "V", clock=ClockQuality.UNSYNCED),
        Reading("m", "i", 7, 10.0, "A", Quality.BAD, Priority.TELEMETRY, ClockQuality.UNSYNCED, bad[1]),
    ]
    assert built[1].meta == bad[1]
    assert all(type(r) is Reading for r in built)
    with pytest.raises(dataclasses.FrozenInstanceError):
        built[0].value = 1  # type: ignore[misc]
    assert hash(built[0]) == hash(Reading("m", "v", 230.5, 10.0, "V", clock=ClockQuality.UNSYNCED))
