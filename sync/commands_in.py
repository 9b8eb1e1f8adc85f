"""Command intake for the uplink: frames from ``<prefix>/<site>/down/cmd/+`` to the agent's handler,
and the site's signed replies on ``<prefix>/<site>/up/cmd_reply``.

The intake does not verify commands: the handler does (:func:`sync.signing.open_command`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from sync.mqtt import MqttLink
from sync.signing import Signer
from sync.wire_base import Topics
from sync.wire_msgs import CommandReply

CommandHandler = Callable[[str, bytes], None]
"""``handler(kind, frame)``: ``kind`` is the last level of the command topic."""


class CommandIntake:
    """Subscribes to the command topics when a handler is set, hands it the frames and publishes replies."""

    def __init__(self, topics: Topics, signer: Signer) -> None:
        self.topics = topics
        self.signer = signer
        self.handler: CommandHandler | None = None

    def subscriptions(self) -> list[tuple[str, int]]:
        """The command subscription (QoS 1), or none while no handler is set."""
        return [(self.topics.commands, 1)] if self.handler is not None else []

    def deliver(self, topic: str, payload: bytes, loop: asyncio.AbstractEventLoop | None) -> None:
        """Hand a command frame to the handler on ``loop``; called on the network thread."""
        handler = self.handler
        if handler is not None and loop is not None:
            kind = topic.rsplit("/", 1)[-1]
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(handler, kind, payload)

    def reply(self, link: MqttLink | None, connected: bool, reply: CommandReply) -> bool:
        """Publish a command reply signed by the site (QoS 1); False when the link is down."""
        if link is None or not connected:
            return False
        link.publish(self.topics.cmd_reply, self.signer.small_frame(reply, reply.command_id), qos=1)
        return True
