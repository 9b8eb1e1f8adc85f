"""An emulated signal controller: applies written states, runs its own conflict monitor and watchdog.

:class:`ControllerEmulator` is the cabinet logic with an injectable clock (tests run it in simulated
time); :class:`ModbusSignalEmulator` serves it over Modbus TCP with pymodbus so the real driver can
talk to it. Register map (also used by :mod:`drivers.signals.modbus`):

- holding 0: command sequence number (also the heartbeat), holding 1: control (0 run, 1 flash,
  2 reset), holding 2..2+n: one indication code per channel (see :data:`drivers.signals.base.CODES`).
- input 0: sequence echo, input 1: status (0 running, 1 flashing), input 2: fault number
  (index into :data:`FAULT_KINDS`, 0 none), input 3..3+n: the codes actually shown; with push
  buttons, input 3+n: the buttons pressed since the last read (bit i = button i, cleared on read).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable

from drivers.signals.monitor import DARK, FLASH, GREEN, GREEN_YIELD, RED, YELLOW, ConflictMonitor, ProgramCard

HR_SEQ, HR_CONTROL, HR_CHANNELS = 0, 1, 2
IR_SEQ, IR_STATUS, IR_FAULT, IR_CHANNELS = 0, 1, 2, 3
CONTROL_RUN, CONTROL_FLASH, CONTROL_RESET = 0, 1, 2
FAULT_KINDS = (
    "",
    "watchdog",
    "flash_requested",
    "conflict",
    "yellow_skipped",
    "yellow_to_green",
    "short_yellow",
    "short_green",
    "red_clearance",
    "ped_clearance",
    "bad_code",
)


class ControllerEmulator:
    """Cabinet logic: channel outputs, conflict monitor, heartbeat watchdog, latched flash."""

    def __init__(
        self,
        card: ProgramCard,
        clock: Callable[[], float] = time.monotonic,
        watchdog_s: float = 0.5,
        buttons: int = 0,
    ) -> None:
        self.card = card
        self.buttons = buttons
        self._pressed = 0
        self.clock = clock
        self.watchdog_s = watchdog_s
        self.monitor = ConflictMonitor(card)
        n = len(card.channels)
        self.shown: list[int] = [FLASH if not p else DARK for p in card.pedestrian]
        self.seq = 0
        self.fault: str | None = "flash_requested"  # powers up flashing until reset
        self.flashed_at: float | None = clock()
        self.last_heartbeat = clock()
        self._n = n
        self.lock = threading.Lock()

    @property
    def flashing(self) -> bool:
        """True while the outputs flash."""
        return self.fault is not None

    def write(self, seq: int, control: int, codes: list[int]) -> None:
        """A command arrives: refresh the heartbeat, then apply, flash or reset."""
        now = self.clock()
        self.poll()
        self.last_heartbeat = now
        self.seq = seq
        if control == CONTROL_FLASH:
            self._trip("flash_requested", now)
            return
        if control == CONTROL_RESET:
            self.fault = None
            self.flashed_at = None
            self.monitor.restart(now)
            self.shown = [RED] * self._n
            return
        if self.fault is not None:
            return
        if len(codes) != self._n or any(c not in (RED, YELLOW, GREEN, GREEN_YIELD) for c in codes):
            self._trip("bad_code", now)
            return
        problem = self.monitor.observe(list(codes), now)
        self.shown = list(codes)
        if problem is not None:
            self._trip(problem, now)

    def poll(self) -> None:
        """Time-driven checks: the heartbeat watchdog."""
        now = self.clock()
        if self.fault is None and now - self.last_heartbeat > self.watchdog_s:
            self._trip("watchdog", now)

    def status(self) -> list[int]:
        """The input registers: seq echo, status, fault number, shown codes."""
        self.poll()
        kind = (self.fault or "").split(" ")[0]
        fault_no = FAULT_KINDS.index(kind) if kind in FAULT_KINDS else len(FAULT_KINDS)
        regs = [self.seq, 1 if self.flashing else 0, fault_no, *self.shown]
        if self.buttons:
            regs.append(self._pressed)
            self._pressed = 0
        return regs

    def press(self, button: int) -> None:
        """A pedestrian pushes button ``button`` (latched until the next read)."""
        self._pressed |= 1 << button

    def _trip(self, reason: str, now: float) -> None:
        if self.fault is None:
            self.fault = reason
            self.flashed_at = now
        self.shown = [DARK if p else FLASH for p in self.card.pedestrian]


class ModbusSignalEmulator:
    """Serves a :class:`ControllerEmulator` over Modbus TCP (pymodbus) from a background thread."""

    def __init__(self, emulator: ControllerEmulator, host: str = "127.0.0.1", port: int = 5020) -> None:
        self.emu = emulator
        self.host, self.port = host, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: object | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def start(self) -> None:
        """Start serving; returns once the port is bound."""
        self._thread = threading.Thread(target=self._run, name="signal-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the Modbus signal emulator did not start")

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._loop is not None and self._server is not None:
            server = self._server
            fut = asyncio.run_coroutine_threadsafe(server.shutdown(), self._loop)  # type: ignore[attr-defined]
            with contextlib.suppress(Exception):
                fut.result(5)
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        from pymodbus.server import ModbusTcpServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        n = len(self.emu.card.channels)
        hr = [SimData(0, values=[0] * (HR_CHANNELS + n), datatype=DataType.REGISTERS)]
        ir = [SimData(0, values=[0] * (IR_CHANNELS + n + 1), datatype=DataType.REGISTERS)]
        co = [SimData(0, values=[False], datatype=DataType.BITS)]
        di = [SimData(0, values=[False], datatype=DataType.BITS)]
        device = SimDevice(0, simdata=(co, di, hr, ir), action=self._action)
        self._loop = asyncio.get_running_loop()
        server = ModbusTcpServer(device, address=(self.host, self.port))
        self._server = server
        watchdog = asyncio.create_task(self._watchdog())
        try:
            await server.serve_forever(background=True)
            self._ready.set()
            with contextlib.suppress(asyncio.CancelledError):
                await server.serving
        finally:
            watchdog.cancel()

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(0.02)
            with self.emu.lock:
                self.emu.poll()

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> None:
        with self.emu.lock:
            if function_code == 4:
                regs = self.emu.status()
                registers[: len(regs)] = regs
            elif function_code in (6, 16) and set_values:
                values = [int(v) for v in set_values]
                if address == HR_SEQ and len(values) >= HR_CHANNELS:
                    self.emu.write(values[HR_SEQ], values[HR_CONTROL], values[HR_CHANNELS:])
        return


class DirectLink:
    """A register link straight into an in-process emulator (tests and simulated-time benches)."""

    def __init__(self, emulator: ControllerEmulator) -> None:
        self.emu = emulator

    def write_registers(self, address: int, values: list[int]) -> None:
        """Write holding registers starting at ``address`` (0 only)."""
        if address == HR_SEQ and len(values) >= HR_CHANNELS:
            self.emu.write(values[HR_SEQ], values[HR_CONTROL], values[HR_CHANNELS:])

    def read_input_registers(self, address: int, count: int) -> list[int]:
        """Read input registers."""
        return self.emu.status()[address : address + count]

    def close(self) -> None:
        """Nothing to close."""
