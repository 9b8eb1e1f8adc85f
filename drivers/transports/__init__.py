"""Byte-stream transports handed to drivers: serial port, TCP, pseudo-terminal, in-memory pair.

:func:`transport_from_config` builds one from a site-config line section.
"""

from __future__ import annotations

from drivers.transports.base import Transport
from drivers.transports.fd import PtyPair, PtyTransport
from drivers.transports.memory import MemoryTransport, memory_pair
from drivers.transports.serial import SerialTransport
from drivers.transports.tcp import TcpTransport

__all__ = [
    "MemoryTransport",
    "PtyPair",
    "PtyTransport",
    "SerialTransport",
    "TcpTransport",
    "Transport",
    "memory_pair",
]
