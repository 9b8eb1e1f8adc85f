"""An emulated RS-485 line for scan tests and benches: devices at different speeds on one pty,
two devices sharing a unit id, a device that never stops talking, Read Device Identification.

It extends the project's :class:`~drivers.modbus.emulator.RtuLine`. A pty has no real baud rate,
so the line reads the speed the master set on the pty (termios, as on a real port) and a device
only understands requests sent at its own speed; at another speed it hears noise and stays silent,
as a real device does. Two devices at one unit id both answer and their bytes collide on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
from collections.abc import Sequence

from drivers.modbus import protocol as p
from drivers.modbus.client import silence_s
from drivers.modbus.emulator import EmulatedDevice, Fault, RtuLine
from drivers.transports.fd import PtyPair
from kernel.errors import DeviceTimeout, TransportError

SPEEDS = {getattr(termios, f"B{b}"): b for b in (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)}


def device_id_answer(dev: EmulatedDevice) -> bytes:
    """Function 43/14 basic identification of an emulated device (vendor, product, revision)."""
    objs = [dev.profile.manufacturer or "unknown", dev.profile.model, "1.0"]
    body = b"".join(bytes([i, len(v.encode())]) + v.encode() for i, v in enumerate(objs))
    return bytes([0x2B, 0x0E, 0x01, 0x01, 0x00, 0x00, len(objs)]) + body


class ScanRigLine(RtuLine):
    """Devices on one pty, each at its own ``(device, baud)``; optional babbling and FC 43 support."""

    def __init__(
        self,
        pair: PtyPair,
        devices: Sequence[tuple[EmulatedDevice, int]],
        identify: Sequence[int] = (),
    ) -> None:
        super().__init__(pair.master, [d for d, _ in devices], devices[0][1] if devices else 9600)
        self.pair = pair
        self.placed = list(devices)
        self.identify = set(identify)
        self.babbling = False
        self._babbler: asyncio.Task[None] | None = None

    def speed(self) -> int:
        """The speed the master last set on the pty (the first device's when it never set one)."""
        with contextlib.suppress(termios.error, OSError):
            return SPEEDS.get(termios.tcgetattr(self.pair._slave_fd)[4], self.baudrate)
        return self.baudrate

    def set_baud(self, unit: int, baud: int) -> None:
        """The technician changes a device's speed (in its menu)."""
        self.placed = [(d, baud if d.unit == unit else b) for d, b in self.placed]

    async def start(self) -> None:
        """Serve; also start babbling if asked."""
        await super().start()
        if self.babbling:
            self._babbler = asyncio.get_running_loop().create_task(self._babble())

    async def stop(self) -> None:
        """Stop serving."""
        if self._babbler is not None:
            self._babbler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._babbler
        await super().stop()

    async def _babble(self) -> None:
        """Keep the pty full of noise, as a device in continuous-output mode keeps the wire busy.

        A real babbler's bytes reach the serial port's kernel buffer whether or not the reader's
        process runs. Writing a few bytes every few milliseconds from this event loop (the scanner's
        too) did not model that: a stall of the loop (a loaded machine, a garbage collection) longer
        than the scanner's quiet window held back the babbler's next write and let the window's timer
        fire first, so the line looked quiet. Kept full, the pty holds more than one read of the
        scanner takes, and the kernel hands the rest over while the loop stands still.
        """
        noise = os.urandom(4096)
        while True:
            try:
                # Returns at once while the pty has room; waits for room once it is full.
                await self.transport.write(noise)
            except DeviceTimeout:
                continue  # nobody read for a while: keep the line full
            except TransportError:
                return  # the line was stopped
            await asyncio.sleep(0)  # let the loop run between writes however fast the reader drains

    async def _answer(self, frame: bytes) -> None:
        self.frames_in += 1
        try:
            p.check_crc(frame)
        except ValueError:
            self.bad_frames += 1
            return
        speed = self.speed()
        hearers = [d for d, b in self.placed if d.unit == frame[0] and b == speed]
        outs: list[bytes] = []
        for dev in hearers:
            if dev.rebooting or dev.fault in (Fault.NO_ANSWER, Fault.TCP_DROP):
                continue
            pdu = frame[1:-2]
            if pdu[:2] == b"\x2b\x0e":
                out_pdu = device_id_answer(dev) if dev.unit in self.identify else bytes([0xAB, 1])
            else:
                out_pdu = dev.handle(pdu)
            outs.append(p.rtu_frame(dev.unit, out_pdu))
        if not outs:
            return
        out = outs[0]
        for other in outs[1:]:  # two transmitters at once: the bits collide
            out = bytes(
                a ^ b ^ 0x55
                for a, b in zip(out.ljust(len(other), b"\xff"), other.ljust(len(out), b"\xff"), strict=False)
            )
        char = (self.transport.bits_per_char or 10) / speed
        await asyncio.sleep(len(frame) * char + silence_s(self.transport) + len(out) * char)
        with contextlib.suppress(Exception):
            await self.transport.write(out)


async def start_scan_line(
    devices: Sequence[tuple[EmulatedDevice, int]], identify: Sequence[int] = (), babbling: bool = False
) -> ScanRigLine:
    """A started line on a fresh pty; its path is ``line.pair.path``."""
    baud = devices[0][1] if devices else 9600
    pair = PtyPair(baud)
    # The pty starts at the first device's speed: an opener that sets no speed (the agent's pty
    # transport, which stands in for a port already configured) talks at that rate.
    attrs = termios.tcgetattr(pair._slave_fd)
    attrs[4] = attrs[5] = getattr(termios, f"B{baud}")
    termios.tcsetattr(pair._slave_fd, termios.TCSANOW, attrs)
    line = ScanRigLine(pair, devices, identify)
    line.babbling = babbling
    await line.start()
    return line


async def stop_scan_line(line: ScanRigLine) -> None:
    """Stop and release the pty."""
    await line.stop()
    line.pair.close()
