"""A dead and a slow device on a 9600-baud RTU line do not slow the other six.

Two emulated lines run side by side over pseudo-terminals, at the same time (so machine load hits
both alike): one with 8 healthy devices, one where unit 7 is dead (never answers) and unit 8 answers
150 ms late. Each device is polled every 0.5 s (4 holding registers, about 30 ms of line time per
poll at 9600 8N1, so the healthy line is about half busy). The six healthy devices on the faulty
line must keep their poll rate within 10 % of the same devices on the healthy line.
"""

from __future__ import annotations

import asyncio
import time

from drivers.modbus.bus import ModbusBus
from drivers.modbus.device import DeviceSettings, ModbusDevice
from drivers.modbus.emulator import EmulatedDevice, Emulator, Fault
from drivers.modbus.profile import load_profile
from drivers.transports import PtyTransport
from kernel.sink import ListSink
from tests.drivers.modbus.helpers import context, running

BAUD = 9600
PERIOD = 0.5
WARMUP = 2.0
WINDOW = 12.0


def settings(unit: int) -> DeviceSettings:
    return DeviceSettings(
        name=f"soil{unit}",
        unit=unit,
        timeout_s=0.25,
        retries=1,
        fast_s=PERIOD,
        slow_s=3600.0,
        breaker_after=3,
        backoff_min_s=1.0,
        backoff_max_s=8.0,
    )


async def line(emu: Emulator, faulty: bool) -> tuple[ModbusBus, ListSink, object]:
    profile = load_profile("soil-7in1")
    emus = [EmulatedDevice(profile, unit, seed=unit) for unit in range(1, 9)]
    if faulty:
        emus[6].set_fault(Fault.NO_ANSWER)
        emus[7].turnaround_s = 0.15
    path = await emu.add_rtu_line(emus, BAUD)
    devices = [ModbusDevice(profile, settings(u)) for u in range(1, 9)]
    bus = ModbusBus(f"line-{'faulty' if faulty else 'healthy'}", PtyTransport(path, BAUD), devices, "rtu")
    sink = ListSink()
    return bus, sink, context(sink)


def rates(sink: ListSink, start: float, end: float) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in sink.readings:
        if r.point == "moisture" and start <= r.ts < end:
            out[r.device] = out.get(r.device, 0) + 1 / (end - start)
    return out


def test_dead_and_slow_devices_do_not_slow_the_others():
    async def main():
        emu = Emulator()
        healthy, h_sink, h_ctx = await line(emu, faulty=False)
        faulty, f_sink, f_ctx = await line(emu, faulty=True)
        t0 = time.time()
        async with running(healthy, h_ctx), running(faulty, f_ctx):
            await asyncio.sleep(WARMUP + WINDOW + 0.2)
        await emu.close()
        return t0, h_sink, f_sink, f_ctx

    t0, h_sink, f_sink, f_ctx = asyncio.run(main())
    base = rates(h_sink, t0 + WARMUP, t0 + WARMUP + WINDOW)
    got = rates(f_sink, t0 + WARMUP, t0 + WARMUP + WINDOW)
    nominal = 1 / PERIOD
    print("poll rates /s, healthy line:", {k: round(v, 3) for k, v in sorted(base.items())})
    print("poll rates /s, faulty line: ", {k: round(v, 3) for k, v in sorted(got.items())})
    for unit in range(1, 7):
        name = f"soil{unit}"
        assert base[name] > 0.8 * nominal, f"healthy line itself too slow: {base}"
        assert abs(got[name] - base[name]) <= 0.10 * base[name], (
            f"{name}: {got[name]:.2f}/s vs {base[name]:.2f}/s"
        )
    assert "soil7" not in got  # the dead one produced nothing, and nothing wrong
    assert got.get("soil8", 0) > 0.5 * nominal  # the slow one is still read
    assert f_ctx.metrics.get("modbus_device_online", {"device": "soil7"}) == 0
    # The breaker keeps the dead device's cost down: far fewer requests than one per poll period.
    dead_requests = f_ctx.metrics.get("modbus_requests_total", {"device": "soil7"})
    assert dead_requests <= 12, dead_requests
