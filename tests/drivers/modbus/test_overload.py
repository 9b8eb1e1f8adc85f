"""A bus offered more polls than it can make: late polls are merged (counted as skipped), never queued;
every device keeps its share; everything read is committed to the store.

Real pieces: the emulated Modbus TCP gateway over a loopback socket, the bus scheduler, the
StoreWriter and the SQLite store. The small ceiling comes from the emulator's 5 ms turnaround per
request: at most 200 polls/s, offered 1,000 (20 devices every 20 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from agent.writer import StoreWriter
from drivers.modbus.bus import ModbusBus
from drivers.modbus.device import DeviceSettings, ModbusDevice
from drivers.modbus.emulator import EmulatedDevice, TcpServer
from drivers.transports import TcpTransport
from sync.store import Store
from tests.drivers.modbus.helpers import context, make_profile

DEVICES, PERIOD_S, TURNAROUND_S, RUN_S = 20, 0.02, 0.005, 2.0


def test_overloaded_bus_merges_late_polls_and_loses_nothing(tmp_path):
    async def main() -> None:
        profile = make_profile()
        server = TcpServer([EmulatedDevice(profile, u, turnaround_s=TURNAROUND_S) for u in range(1, DEVICES + 1)])
        await server.start()
        t_made = time.monotonic()
        devs = [
            ModbusDevice(profile, DeviceSettings(name=f"d{u}", unit=u, timeout_s=1.0, fast_s=PERIOD_S, slow_s=3600))
            for u in range(1, DEVICES + 1)
        ]
        bus = ModbusBus("gw", TcpTransport("127.0.0.1", server.port), devs, "tcp")
        store = Store(tmp_path / "store.db", "site-a")
        ctx = context()
        writer = StoreWriter(store, ctx.metrics, queue_size=1000)
        ctx.sink = writer
        wtask = asyncio.create_task(writer.run())
        btask = asyncio.create_task(bus.run(ctx))
        heap_max = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < RUN_S:
            await asyncio.sleep(0.05)
            heap_max = max(heap_max, len(bus._heap))
        btask.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await btask
        t_end = time.monotonic()
        # Slots still late when the bus stopped would have been counted at their next poll.
        pending = sum(max(0, int((t_end - d.due["fast"]) // PERIOD_S)) for d in devs)
        await writer.flush()
        wtask.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await wtask
        await server.stop()

        polls = {d.name: ctx.metrics.get("modbus_polls_total", {"device": d.name, "result": "ok"}) for d in devs}
        done = sum(polls.values())
        offered = DEVICES * (t_end - t_made) / PERIOD_S
        # Overloaded: far fewer polls than offered, and the rest counted as skipped, not queued.
        assert done < 0.6 * offered
        assert bus.skipped == ctx.metrics.get("modbus_polls_skipped_total", {"bus": "gw"})
        # Every slot is a poll made, merged into one (counted) or still late; a poll made less than a
        # period late restarts its device's schedule from then, giving up under one slot.
        assert 2 * done + bus.skipped + pending + DEVICES >= 0.95 * offered
        assert heap_max <= DEVICES  # one schedule entry per device, whatever the lateness
        # Fair under overload: no device starves.
        assert min(polls.values()) >= 0.5 * max(polls.values()) - 1
        # Nothing read is lost: every reading handed to the writer is committed.
        points = ctx.metrics.total("modbus_points_total")
        assert points > 0
        assert writer.committed == points
        assert store.depth() == points
        store.close()

    asyncio.run(main())


def test_the_pace_stretches_every_poll_period_and_counts_what_it_moves():
    async def main() -> None:
        profile = make_profile()
        server = TcpServer([EmulatedDevice(profile, u) for u in range(1, 4)])
        await server.start()
        devs = [
            ModbusDevice(profile, DeviceSettings(name=f"d{u}", unit=u, timeout_s=1.0, fast_s=0.05, slow_s=3600))
            for u in range(1, 4)
        ]
        bus = ModbusBus("gw", TcpTransport("127.0.0.1", server.port), devs, "tcp")
        ctx = context()
        ctx.pace.stretch = 4.0
        task = asyncio.create_task(bus.run(ctx))
        await asyncio.sleep(2.0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await server.stop()
        polls = [ctx.metrics.get("modbus_polls_total", {"device": d.name, "result": "ok"}) for d in devs]
        # As configured: 40 polls each in 2 s; stretched 4x: about 10 (the first poll is at once).
        assert all(8 <= n <= 13 for n in polls), polls
        assert bus.skipped >= 3 * (sum(polls) - 3) - 3  # three moved later for every poll made

    asyncio.run(main())
