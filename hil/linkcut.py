"""A TCP relay whose link can be cut on demand or lose frames: link faults for tests and benches."""

from __future__ import annotations

import contextlib
import random
import selectors
import socket
import threading


class CuttableLink:
    """Relays 127.0.0.1:``port`` to ``target``; :meth:`cut` drops every connection and refuses new ones."""

    def __init__(self, target: tuple[str, int], loss: float = 0.0, seed: int = 1) -> None:
        self.target = target
        self.loss = loss
        self.dropped = 0
        self.relayed = 0
        self._rng = random.Random(seed)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, selectors.EVENT_READ, None)
        self._pairs: dict[socket.socket, socket.socket] = {}
        self._cut = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cuttable-link", daemon=True)
        self._thread.start()

    def cut(self) -> None:
        """Cut the cable: bytes on open connections vanish (the peer times out), new ones are refused."""
        self._cut.set()

    def set_loss(self, loss: float) -> None:
        """Drop each relayed chunk (one Modbus TCP frame here) with probability ``loss``, either way."""
        self.loss = loss

    def restore(self) -> None:
        """Let connections through again."""
        self._cut.clear()

    def close(self) -> None:
        """Stop relaying and close everything."""
        self._stop.set()
        self._thread.join(5)
        self._drop_all()
        self._listener.close()

    def _drop_all(self) -> None:
        for s in list(self._pairs):
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(s)
            s.close()
        self._pairs.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._sel.select(timeout=0.01):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    conn, _ = self._listener.accept()
                    if self._cut.is_set():
                        conn.close()
                        continue
                    try:
                        up = socket.create_connection(self.target, timeout=1)
                    except OSError:
                        conn.close()
                        continue
                    self._pairs[conn], self._pairs[up] = up, conn
                    self._sel.register(conn, selectors.EVENT_READ, None)
                    self._sel.register(up, selectors.EVENT_READ, None)
                    continue
                other = self._pairs.get(sock)
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if not data or other is None or self._cut.is_set():
                    if self._cut.is_set():
                        continue  # silence: swallow without closing, like a cut cable
                    for s in (sock, other):
                        if s is not None:
                            with contextlib.suppress(KeyError, ValueError):
                                self._sel.unregister(s)
                            s.close()
                            self._pairs.pop(s, None)
                    continue
                if self.loss and self._rng.random() < self.loss:
                    self.dropped += 1  # a lost frame: the peer hears nothing and times out
                    continue
                self.relayed += 1
                other.sendall(data)
