"""A TCP relay between a client and the broker whose client-to-broker direction can be cut.

Used to open the window between a receiver persisting a batch and its ack reaching the broker:
the receiver still gets every message, but what it publishes after :meth:`Gate.cut_upstream` is
dropped on the floor, so the test can kill it from outside with the batch committed and unacknowledged.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class Gate:
    """Relays 127.0.0.1:``port`` to 127.0.0.1:``target``; threads stop when the sockets close."""

    def __init__(self, target: int) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._upstream_open = threading.Event()
        self._upstream_open.set()
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, name="gate-accept", daemon=True).start()

    def cut_upstream(self) -> None:
        """From now on, drop what clients send towards the broker (the broker's side still flows)."""
        self._upstream_open.clear()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            self._socks += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if upstream and not self._upstream_open.is_set():
                    continue
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Stop listening and close every relayed connection."""
        self._listener.close()
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.close()
