"""The field loop: an intersection ticking in its thread against the emulated controller over TCP."""

from __future__ import annotations

import asyncio
import contextlib

from agent.config import load_config
from control.traffic.card import program_card
from drivers.signals.emulator import ControllerEmulator, ModbusSignalEmulator
from kernel.kinds import KindRegistry
from kernel.readings import Priority
from kernel.sink import ListSink
from kernel.source import RunContext
from tests.conftest import free_port
from tests.traffic.helpers import SITE


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
        status = sources[0].apply_command({"action": "status", "intersection": "ltt-ngt"})
        assert status.outcome == "accepted"
        assert '"latched": null' in status.reason
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
    assert alarms == []  # nothing tripped while it ran (the stop flash is reported after the sink closed)
