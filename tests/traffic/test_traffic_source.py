"""The field loop: an intersection ticking in its thread against the emulated controller over TCP."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from agent.config import load_config
from control.traffic.card import program_card
from drivers.signals.emulator import ControllerEmulator, ModbusSignalEmulator
from kernel.clock import Clock
from kernel.kinds import KindRegistry
from kernel.readings import ClockQuality, Priority
from kernel.sink import ListSink
from kernel.source import RunContext
from tests.conftest import free_port
from tests.traffic.helpers import SITE

gaps: list[float] = []


async def _loop_gaps() -> None:
    """How late the event loop wakes while commands are applied (it must never wait on Modbus I/O)."""
    loop = asyncio.get_running_loop()
    while True:
        t = loop.time()
        await asyncio.sleep(0.01)
        gaps.append(loop.time() - t - 0.01)


def test_source_runs_the_junction_and_reports(tmp_path) -> None:
    text = SITE.read_text().replace("port: 5020", f"port: {(port := free_port())}")
    path = tmp_path / "site.yaml"
    path.write_text(text)
    cfg = load_config(path)
    assert cfg.traffic is not None
    ix = cfg.traffic.intersections[0]
    emu = ControllerEmulator(program_card(ix), watchdog_s=0.5)
    server = ModbusSignalEmulator(emu, port=port)
    server.start()
    sink = ListSink()
    ctx = RunContext(cfg, sink)
    sources = KindRegistry().get("traffic").build_sources(cfg.devices, ctx)
    assert [s.name for s in sources] == ["traffic:ltt-ngt"]

    async def main() -> None:
        task = asyncio.create_task(sources[0].run(ctx))
        await asyncio.sleep(3.0)
        # Commands come in on the event loop and are applied by the intersection's own thread, which
        # owns the Modbus link: nothing blocks the loop and no event loop is nested.
        status = await sources[0].apply_command({"action": "status", "intersection": "ltt-ngt"})  # type: ignore[misc]
        assert status.outcome == "accepted"
        assert '"latched": null' in status.reason
        beat = asyncio.create_task(_loop_gaps())
        flash = await sources[0].apply_command({"action": "flash", "intersection": "ltt-ngt", "reason": "t"})  # type: ignore[misc]
        assert flash.outcome == "accepted", flash.reason
        assert emu.fault == "flash_requested"
        clear = await sources[0].apply_command(  # type: ignore[misc]
            {"action": "clear_flash", "intersection": "ltt-ngt", "operator": "op1"}
        )
        assert clear.outcome == "accepted", clear.reason
        assert emu.fault is None
        await asyncio.sleep(1.0)
        assert emu.fault is None
        beat.cancel()
        await asyncio.gather(beat, return_exceptions=True)
        assert gaps
        assert max(gaps) < 0.25
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    try:
        asyncio.run(main())
    finally:
        server.stop()
    states = [r for r in sink.readings if r.point == "signal.state"]
    assert states
    assert states[0].value is not None
    assert "ns=r" in str(states[0].value)
    assert emu.monitor.faults == []
    assert emu.fault == "flash_requested"  # stopping the source flashes the junction
    alarms = [r for r in sink.readings if r.priority == Priority.ALARM]
    # Only the centre's flash tripped while it ran (the stop flash is reported after the sink closed).
    assert [r.value for r in alarms] == ["operator_flash"]


@pytest.mark.parametrize(
    ("quality", "expected"), [(ClockQuality.SYNCED, "coordinated"), (ClockQuality.UNSYNCED, "free")]
)
def test_the_running_source_coordinates_on_the_run_clock_only_when_synchronised(
    tmp_path, quality: ClockQuality, expected: str
) -> None:
    text = SITE.read_text().replace("port: 5020", f"port: {(port := free_port())}")
    text = text.replace("      detectors:\n", "      coordination: {plan: am_peak, stage: ew}\n      detectors:\n", 1)
    path = tmp_path / "site.yaml"
    path.write_text(text)
    cfg = load_config(path)
    assert cfg.traffic is not None
    assert cfg.traffic.intersections[0].coordination is not None
    emu = ControllerEmulator(program_card(cfg.traffic.intersections[0]), watchdog_s=0.5)
    server = ModbusSignalEmulator(emu, port=port)
    server.start()
    sink = ListSink()
    ctx = RunContext(cfg, sink, clock=Clock(override=quality))
    (source,) = KindRegistry().get("traffic").build_sources(cfg.devices, ctx)

    async def main() -> None:
        task = asyncio.create_task(source.run(ctx))
        await asyncio.sleep(2.5)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    try:
        asyncio.run(main())
    finally:
        server.stop()
    events = [r for r in sink.readings if r.point == "coordination"]
    assert [r.value for r in events] == [expected]
    assert events[0].priority == Priority.EVENT
    assert emu.monitor.faults == []
