"""The centre's MQTT side: publishes signed command frames, collects replies and statuses.

Replies are frames signed by the site (``Signer.small_frame``); only those that verify against the
site's registered keys, and name the site of their topic, are kept. Statuses are frames signed by
the site too (``sync.signing.sign_status``) and are kept on the same terms; any other status is
counted in ``untrusted_status`` and ignored."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from kernel.errors import SignatureError, SyncError
from sync.mqtt import LinkOptions, MqttLink
from sync.signing import Signer, SiteRegistry, open_reply, open_status, sign_command
from sync.wire import Command, CommandReply, Status, Topics, WireError, site_of_topic

log = logging.getLogger("kbe.centre")

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
        """The latest status of each site whose frame verified against its keys."""
        self.untrusted_status = 0
        self._status_warned: set[str] = set()
        """Statuses dropped: unknown site, unsigned (plain JSON), bad signature, not a status, or another site's."""
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
            status = self._open_status(site, payload)
            with self._cond:
                if status is None:
                    self.untrusted_status += 1
                else:
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

    def _open_status(self, site: str, payload: bytes) -> Status | None:
        """The status of a frame signed by ``site``'s key and naming that site, or None."""
        keys = self.sites.keys_for(site)
        try:
            if keys is None:
                raise SignatureError(f"site {site!r} is not registered")
            return open_status(payload, keys, site)
        except (SignatureError, WireError) as exc:
            if site not in self._status_warned:  # network thread only
                if len(self._status_warned) >= 1000:  # bounded: anyone can invent topics of unknown sites
                    self._status_warned.clear()
                self._status_warned.add(site)
                log.warning("ignored a status on the topic of %s that is not from that site: %s (logged once per "
                            "site)", site, str(exc)[:200])  # fmt: skip
            return None

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
