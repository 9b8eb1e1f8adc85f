"""The rig's side of ``pin_factory: rig``: a Unix socket the agent's pin factory listens to.

The rig sets the electrical level of the agent's input pins (``drivers/gpio/rigpins.py`` applies
them to gpiozero mock pins in the agent's process). Every level set so far is replayed to a new
connection, so an agent killed and restarted by the rig finds the contacts as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from drivers.gpio.rigpins import format_line

log = logging.getLogger("kbe.hil")


class PinServer:
    """Serves pin levels to every agent that connects to ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.levels: dict[int, bool] = {}
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.AbstractServer | None = None
        self.connected = asyncio.Event()

    async def start(self) -> None:
        """Listen on the socket (replacing a stale one)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._client, path=str(self.path))

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self.connected.set()
        log.info("gpio rig: an agent connected (%d pins set so far)", len(self.levels))
        try:
            writer.write(b"".join(format_line(p, v) for p, v in sorted(self.levels.items())))
            await writer.drain()
            while await reader.read(1024):  # the agent sends nothing; EOF when it goes
                pass
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            if not self._writers:
                self.connected.clear()
            writer.close()

    async def set(self, pin: int, level: bool) -> None:
        """Drive ``pin`` to ``level`` in every connected agent (and in any that connects later)."""
        self.levels[pin] = level
        line = format_line(pin, level)
        for w in list(self._writers):
            try:
                w.write(line)
                await w.drain()
            except (ConnectionError, OSError):
                self._writers.discard(w)

    async def close(self) -> None:
        """Stop serving and remove the socket."""
        for w in list(self._writers):
            w.close()
        self._writers.clear()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
