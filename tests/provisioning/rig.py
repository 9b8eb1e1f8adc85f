"""An emulated site for the scan and page tests: one RS-485 line on a pty with devices at mixed unit
ids and two speeds (one of them with its float words swapped, one answering Read Device
Identification), and a Modbus TCP gateway with two more devices."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from drivers.modbus.emulator import EmulatedDevice, Emulator
from drivers.modbus.profile import load_profile
from provisioning.scan_rig import ScanRigLine, start_scan_line, stop_scan_line
from tests.conftest import agent_argv, agent_env


class Site:
    """The rig; ``pinned`` holds (device unit, point) -> value the agent must read back exactly."""

    def __init__(self) -> None:
        sdm = load_profile("eastron-sdm120")
        self.rtu = {
            1: EmulatedDevice(sdm, 1, seed=1),
            7: EmulatedDevice(load_profile("xy-md02"), 7, seed=7),
            12: EmulatedDevice(sdm.model_copy(update={"word_order": "little"}), 12, seed=12),
            23: EmulatedDevice(load_profile("soil-7in1"), 23, seed=23),
        }
        self.bauds = {1: 9600, 7: 9600, 12: 9600, 23: 19200}
        self.tcp = {
            3: EmulatedDevice(load_profile("eastron-sdm630"), 3, seed=3),
            5: EmulatedDevice(load_profile("ysi-odo-ct"), 5, seed=5),
        }
        self.pinned = {
            (1, "voltage"): 231.5,
            (7, "humidity"): 64.2,
            (12, "frequency"): 49.75,
            (23, "ph"): 6.8,
            (3, "frequency"): 50.25,
            (5, "temperature"): 21.5,
        }
        self.line: ScanRigLine | None = None
        self.emu = Emulator()
        self.tcp_port = 0

    async def start(self) -> None:
        for (unit, point), value in self.pinned.items():
            (self.rtu.get(unit) or self.tcp[unit]).set_value(point, value)
        self.line = await start_scan_line([(d, self.bauds[u]) for u, d in self.rtu.items()], identify=[1])
        self.tcp_port = await self.emu.add_tcp(list(self.tcp.values()))

    @property
    def pty(self) -> str:
        assert self.line is not None
        return self.line.pair.path

    async def stop(self) -> None:
        if self.line is not None:
            await stop_scan_line(self.line)
        await self.emu.close()


async def run_cli(*args: str, timeout: float = 120.0) -> tuple[int, str, str]:
    """``edge-agent ARGS`` in a subprocess; (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *agent_argv(*args), env=agent_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(), err.decode()


async def start_agent(config: Path, log: Path) -> asyncio.subprocess.Process:
    with open(log, "ab") as err:
        return await asyncio.create_subprocess_exec(
            *agent_argv("run", "--config", str(config)), env=agent_env(), stdout=err, stderr=err
        )


async def stop_agent(proc: asyncio.subprocess.Process, log: Path) -> None:
    if proc.returncode is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), 30)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError("agent did not stop:\n" + log.read_text()[-3000:]) from None


async def wait_for(cond, timeout: float = 30.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"{what} not met in time"
        await asyncio.sleep(0.2)
