"""The centre's MQTT side: publishes signed command frames, collects replies and statuses.

Replies are frames signed by the site (``Signer.small_frame``); only those that verify against the
site's registered keys, and name the site of their topic, are kept. Statuses are plain JSON
(docs/wire-protocol.md) and are kept only for registered sites, on their own topic."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from kernel.errors import SignatureError, SyncError
from sync.mqtt import LinkOptions, MqttLink
from sync.signing import Signer, SiteRegistry, open_reply, sign_command
from sync.wire import Command, CommandReply, Status, Topics, WireError, site_of_topic

FINAL_PHASES = frozenset({"committed", "rolled-back", "aborted"})


def is_final(reply: CommandReply) -> bool:
    """Whether a reply ends a command: a refusal or failure, a plain command's answer, or an update's outcome."""
    return reply.outcome != "accepted" or reply.phase in FINAL_PHASES or reply.phase == ""


def make_command(site: str, kind: str, body: dict[str, Any], ttl_s: float, command_id: str | None = None) -> Command:
    """A command for one site, valid from now for ``ttl_s``."""
    now = time.time()
    return Command(
        command_id=command_id or f"{kind}-{uuid.uuid4().hex[:12]}",
        target=site,
        kind=kind,
        issued_at=now,
        expires_at=now + ttl_s,
        body=body,
    )


class CentreLink:
    """One MQTT connection of the centre: send signed commands, watch every site's replies and status."""

    def __init__(self, opts: LinkOptions, signer: Signer, sites: SiteRegistry, prefix: str = "kbe") -> None:
        self.signer = signer
        self.sites = sites
        """The sites' public keys: a reply is kept only when its frame verifies against its site's keys."""
        self.prefix = prefix
        self.refused = 0
        """Replies dropped: unknown site, bad signature, not a reply, or naming another site."""
        self.replies: list[CommandReply] = []
        self.by_id: dict[str, list[tuple[CommandReply, float]]] = {}
        """Replies per command id, each with the monotonic time it arrived."""
        self.status: dict[str, Status] = {}
        self.bytes_sent = 0
        self._cond = threading.Condition()
        self._listeners: list[Callable[[CommandReply], None]] = []
        any_site = Topics(prefix, "+")
        self.link = MqttLink(
            opts, on_message=self._on_message, subscriptions=[(any_site.cmd_reply, 1), (any_site.status, 1)]
        )

    def start(self, timeout: float = 15.0) -> CentreLink:
        """Connect; raise SyncError when the broker does not answer in time."""
        self.link.start()
        deadline = time.monotonic() + timeout
        while not self.link.connected:
            if time.monotonic() > deadline:
                self.link.stop()
                raise SyncError(f"cannot connect to {self.link.opts.broker}: {self.link.last_error or 'timeout'}")
            time.sleep(0.05)
        time.sleep(0.2)  # the SUBSCRIBE goes out right after CONNACK
        return self

    def stop(self) -> None:
        """Disconnect."""
        self.link.stop()

    def on_reply(self, fn: Callable[[CommandReply], None]) -> None:
        """Call ``fn`` (network thread) for every reply."""
        self._listeners.append(fn)

    def _on_message(self, topic: str, payload: bytes) -> None:
        try:
            site = site_of_topic(topic)
        except WireError:
            return
        if topic.endswith("/status"):
            try:
                status = Status.model_validate_json(payload)
            except (ValidationError, ValueError):
                return
            if status.site_id == site and self.sites.keys_for(site) is not None:
                with self._cond:
                    self.status[status.site_id] = status
                    self._cond.notify_all()
            return
        reply = self._open_reply(site, payload)
        if reply is None:
            with self._cond:
                self.refused += 1
            return
        with self._cond:
            self.replies.append(reply)
            self.by_id.setdefault(reply.command_id, []).append((reply, time.monotonic()))
            self._cond.notify_all()
        for fn in self._listeners:
            with contextlib.suppress(Exception):
                fn(reply)

    def _open_reply(self, site: str, payload: bytes) -> CommandReply | None:
        """The reply of a frame signed by ``site``'s key and naming that site, or None."""
        keys = self.sites.keys_for(site)
        if keys is None:
            return None
        try:
            reply = open_reply(payload, keys)
        except (SignatureError, WireError):
            return None
        return reply if reply.site_id == site else None

    def send(self, cmd: Command) -> int:
        """Sign and publish (QoS 1); returns the frame's size in bytes."""
        frame = sign_command(cmd, self.signer)
        self.link.publish(Topics(self.prefix, cmd.target).command(cmd.kind), frame, qos=1)
        self.bytes_sent += len(frame)
        return len(frame)

    def replies_to(self, command_id: str) -> list[CommandReply]:
        """Replies received for one command, oldest first."""
        with self._cond:
            return [r for r, _t in self.by_id.get(command_id, [])]

    def final_reply(self, command_id: str) -> tuple[CommandReply, float] | None:
        """The first final reply to a command and when it arrived, or None yet."""
        with self._cond:
            return next(((r, t) for r, t in self.by_id.get(command_id, []) if is_final(r)), None)

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` holds (checked on every message), at most ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
            return True
