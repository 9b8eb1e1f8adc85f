"""Fixtures for the update tests: a site with Modbus meters, a centre that signs and follows updates."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml

from kernel.errors import SignatureError
from sync.signing import Signer, generate_keypair, load_public_keys, open_reply, open_status, sign_command
from sync.wire import Command, CommandReply, Status, Topics, WireError
from tests.e2e.test_crash_safety import _EmulatorThread
from tests.sync.conftest import receivers, wait_for  # noqa: F401 - fixture


@dataclass
class Keys:
    """The site's and the centre's keys."""

    site_key: Path
    site_pub: Path
    centre: Signer
    centre_pub: Path
    rogue: Signer
    registry: Path


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    site_key, site_pub = generate_keypair(tmp_path / "keys", "site")
    centre_key, centre_pub = generate_keypair(tmp_path / "keys", "centre")
    rogue_key, _ = generate_keypair(tmp_path / "keys", "rogue")
    registry = tmp_path / "sites.yaml"
    return Keys(site_key, site_pub, Signer.from_file(centre_key), centre_pub, Signer.from_file(rogue_key), registry)


@pytest.fixture
def meters() -> Iterator[_EmulatorThread]:
    emu = _EmulatorThread(2)
    yield emu
    emu.close()


def site_config(
    site: str, broker_url: str, keys: Keys, work: Path, modbus_port: int, units: tuple[int, ...] = (1,)
) -> dict[str, Any]:
    """A site polling SDM120 meters over Modbus TCP, with an uplink and updates enabled."""
    return {
        "site": {"id": site, "name": "Update test", "location": {"lat": 21.18, "lon": 106.07}},
        "devices": [
            {"driver": "modbus", "name": f"meter-{u}", "profile": "eastron-sdm120", "unit": u,
             "line": {"type": "tcp", "host": "127.0.0.1", "port": modbus_port},
             "poll": {"fast_s": 0.2, "slow_s": 1}, "timeout_s": 0.3, "backoff_max_s": 1.0}
            for u in units
        ],
        "sync": {
            "broker": broker_url,
            "signing_key_file": str(keys.site_key),
            "allow_plaintext": True,  # the test's own broker on the loopback
            "command_public_keys": [str(keys.centre_pub)],
            "centre_public_keys": [str(keys.centre_pub)],
            "keepalive_s": 5,
            "ack_timeout_s": 3,
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 1.0,
            "batch": {"max_age_s": 0.2, "max_count": 500},
        },
        "store": {"path": str(work / "store.db"), "commit_interval_s": 0.02},
        "health": {"listen": None},
        "update": {"dir": str(work / "updates"), "grace_s": 2.0},
    }


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


class Centre:
    """The centre's side over MQTT: signs and publishes updates, collects replies and statuses."""

    def __init__(self, port: int, site: str, signer: Signer, site_pub: Path, prefix: str = "kbe") -> None:
        self.site, self.signer, self.topics = site, signer, Topics(prefix, site)
        self.site_keys = load_public_keys([site_pub])
        """Replies are frames signed by the site: kept only when they verify against its key."""
        self.replies: list[CommandReply] = []
        self.refused: list[bytes] = []
        self.statuses: list[Status] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"centre-{uuid.uuid4().hex[:6]}")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe([(self.topics.cmd_reply, 1), (self.topics.status, 1)])
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        if msg.topic.endswith("/status"):
            try:  # a status is a frame signed by the site, like its replies
                self.statuses.append(open_status(msg.payload, self.site_keys, self.site))
            except (SignatureError, WireError):
                self.refused.append(msg.payload)
        else:
            try:
                reply = open_reply(msg.payload, self.site_keys)
            except (SignatureError, WireError):
                self.refused.append(msg.payload)
                return
            self.replies.append(reply)

    def command(self, cid: str, body: dict[str, Any], ttl: float = 120.0, target: str | None = None) -> Command:
        now = time.time()
        return Command(command_id=cid, target=target or self.site, kind="update", issued_at=now,
                       expires_at=now + ttl, body=body)  # fmt: skip

    def frame(self, cmd: Command, signer: Signer | None = None) -> bytes:
        return sign_command(cmd, signer or self.signer)

    def send(self, frame: bytes) -> None:
        self.client.publish(self.topics.command("update"), frame, qos=1).wait_for_publish(5)

    def replies_to(self, cid: str) -> list[CommandReply]:
        return [r for r in self.replies if r.command_id == cid]

    def reply(self, cid: str, timeout: float = 20.0, phase: str | None = None) -> CommandReply:
        def match() -> list[CommandReply]:
            return [r for r in self.replies_to(cid) if phase is None or r.phase == phase]

        wait_for(lambda: bool(match()), timeout, f"a reply to {cid} ({phase or 'any'})")
        return match()[-1]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
