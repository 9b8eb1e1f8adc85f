"""Commands from the centre, end to end: signed on the centre side, published on the command topic,
verified, checked and applied by a running agent, answered on the reply topic.

Real parts: a private Mosquitto, the agent as a subprocess with a lighting controller whose outputs
are an emulated Modbus lighting controller, and a paho client standing in for the centre.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml

from control.lighting.emulator import LightingControllerEmulator
from control.lighting.outputs import OutputState
from sync.signing import Signer, generate_keypair, load_public_key, open_reply, sign_command
from sync.wire import Command, CommandReply, Topics
from tests.brokers import Mosquitto
from tests.conftest import agent_argv, agent_env, free_port
from tests.lighting.conftest import lighting_dict
from tests.sync.conftest import wait_for

SITE = "bn-cmd-01"


class _Centre:
    """The centre's side: publishes command frames, collects replies."""

    def __init__(self, port: int, site_pub: Path) -> None:
        self.replies: list[CommandReply] = []
        site_keys = [load_public_key(site_pub)]  # replies are signed by the site: verified here
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"centre-{uuid.uuid4().hex[:6]}"
        )
        self.client.on_message = lambda _c, _u, msg: self.replies.append(
            open_reply(msg.payload, site_keys)
        )
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(Topics("kbe", SITE).cmd_reply, qos=1)
        self.client.loop_start()

    def send(self, frame: bytes, kind: str = "lighting") -> None:
        self.client.publish(Topics("kbe", SITE).command(kind), frame, qos=1).wait_for_publish(5)

    def reply_to(self, command_id: str, timeout: float = 20.0) -> CommandReply:
        wait_for(
            lambda: any(r.command_id == command_id for r in self.replies), timeout, f"a reply to {command_id}"
        )
        return [r for r in self.replies if r.command_id == command_id][-1]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class _LampController:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = free_port()
        self.emu = LightingControllerEmulator(initial=OutputState(True, 100))
        asyncio.run_coroutine_threadsafe(self.emu.start("127.0.0.1", self.port), self.loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.emu.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def lamps() -> Iterator[_LampController]:
    ctl = _LampController()
    yield ctl
    ctl.close()


def _command(cid: str, body: dict, ttl: float = 120.0) -> Command:
    now = time.time()
    return Command(
        command_id=cid, target=SITE, kind="lighting", issued_at=now, expires_at=now + ttl, body=body
    )


def test_signed_commands_are_applied_once_and_forged_ones_refused(
    tmp_path: Path, lamps: _LampController
) -> None:
    site_key, site_pub = generate_keypair(tmp_path / "keys", "site")
    centre_key, centre_pub = generate_keypair(tmp_path / "keys", "centre")
    rogue_key, _ = generate_keypair(tmp_path / "keys", "rogue")
    centre, rogue = Signer.from_file(centre_key), Signer.from_file(rogue_key)
    lighting = lighting_dict(state_path=str(tmp_path / "lighting.json"), tick_s=0.2)
    lighting["circuits"] = [
        {
            "name": "m1",
            "group": "route-1",
            "lamps": 10,
            "lamp_watts": 100,
            "output": {
                "type": "modbus",
                "host": "127.0.0.1",
                "port": lamps.port,
                "relay_coil": 0,
                "dim_register": 1,
                "timeout_s": 1,
            },
        }
    ]
    with Mosquitto(tmp_path / "broker") as broker:
        cfg = {
            "site": {"id": SITE, "name": "Command test", "location": {"lat": 21.19, "lon": 106.08}},
            "devices": [{"driver": "lighting", "name": "street"}],
            "sync": {
                "broker": broker.url,
                "allow_plaintext": True,
                "centre_public_keys": [str(centre_pub)],
                "signing_key_file": str(site_key),
                "command_public_keys": [str(centre_pub)],
                "keepalive_s": 5,
            },
            "store": {"path": str(tmp_path / "store.db")},
            "health": {"listen": None},
            "lighting": lighting,
        }
        path = tmp_path / "site.yaml"
        path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
        log = open(tmp_path / "agent.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            agent_argv("run", "--config", str(path)), env=agent_env(), stdout=log, stderr=subprocess.STDOUT
        )
        hq = _Centre(broker.port, site_pub)
        try:
            # The agent subscribes once connected; resend the first command until it answers.
            first = sign_command(
                _command("ov-1", {"action": "override", "circuit": "m1", "level": 35, "duration_s": 600}),
                centre,
            )
            deadline = time.monotonic() + 60
            while not any(r.command_id == "ov-1" for r in hq.replies):
                assert time.monotonic() < deadline, (tmp_path / "agent.log").read_text()[-3000:]
                hq.send(first)
                time.sleep(1.0)
            assert hq.reply_to("ov-1").outcome == "accepted"
            wait_for(lambda: lamps.emu.state() == OutputState(True, 35), 15, "the lamps at 35 %")

            hq.replies.clear()
            hq.send(first)  # replayed frame
            replay = hq.reply_to("ov-1")
            assert replay.outcome == "refused"
            assert "replay" in replay.reason

            forged = sign_command(
                _command("ov-2", {"action": "override", "circuit": "m1", "level": 0, "duration_s": 600}),
                rogue,
            )
            hq.send(forged)
            assert hq.reply_to("ov-2").outcome == "refused"

            good = bytearray(
                sign_command(
                    _command("ov-3", {"action": "override", "circuit": "m1", "level": 0, "duration_s": 600}),
                    centre,
                )
            )
            good[-5] ^= 0x01  # one bit flipped in the signed payload
            hq.send(bytes(good))
            assert hq.reply_to("ov-3").outcome == "refused"

            expired = _command("ov-4", {"action": "override", "circuit": "m1", "level": 0, "duration_s": 600})
            expired = expired.model_copy(
                update={"issued_at": time.time() - 600, "expires_at": time.time() - 300}
            )
            hq.send(sign_command(expired, centre))
            assert hq.reply_to("ov-4").outcome == "refused"

            unsafe = sign_command(
                _command("ov-5", {"action": "override", "circuit": "m1", "level": 250, "duration_s": 600}),
                centre,
            )
            hq.send(unsafe)
            assert hq.reply_to("ov-5").outcome == "refused"

            time.sleep(1.0)
            assert lamps.emu.state() == OutputState(True, 35), "no refused command reached the lamps"
        finally:
            hq.close()
            proc.terminate()
            proc.wait(30)
            log.close()
    assert json.loads((tmp_path / "lighting.json").read_text())["overrides"]["m1"]["level"] == 35
