"""pyserial is loaded by the first serial line that opens, and a serial line still works through it.

A pseudo-terminal stands in for the RS-485 adapter (pyserial opens its slave end like a tty)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from drivers.transports.serial import SerialTransport
from kernel.errors import TransportError
from tests.conftest import agent_env


def test_importing_the_transports_does_not_load_pyserial() -> None:
    code = "import sys, drivers.transports, drivers.transports.config; assert 'serial' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env=agent_env(), timeout=60)


async def test_a_serial_line_opens_reads_and_writes_through_pyserial() -> None:
    master, slave = os.openpty()
    try:
        line = SerialTransport(os.ttyname(slave), 9600)
        async with line:
            assert "serial" in sys.modules
            os.write(master, b"\x01\x03")
            assert await line.read_exactly(2, 2.0) == b"\x01\x03"
            await line.write(b"ok")
            assert os.read(master, 2) == b"ok"
    finally:
        os.close(master)
        os.close(slave)


async def test_a_missing_port_is_a_transport_error() -> None:
    with pytest.raises(TransportError, match="cannot open"):
        await SerialTransport("/dev/ttyKBE-none", 9600).open()
