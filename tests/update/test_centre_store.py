"""The receiver keeps the sites' status and command replies (SQLite and PostgreSQL), and
``edge-agent centre sites`` lists them; ``centre send config`` checks the file before sending."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from agent.cli import cli
from kernel.errors import ConfigError
from provisioning.centre.operate import config_update_body
from provisioning.centre.overview import render, site_rows
from sync.receiver import Receiver
from sync.receiver_db import open_db
from sync.signing import Signer, SiteRegistry, generate_keypair, sign_status
from sync.wire import BufferStats, CommandReply, Status
from tests.sync.conftest import centre_pair, db_url  # noqa: F401 - fixture


def _registry(tmp_path: Path) -> Path:
    _, pub = generate_keypair(tmp_path / "keys", "a")
    path = tmp_path / "sites.yaml"
    path.write_text(yaml.safe_dump({"sites": {
        "site-a": {"public_keys": [str(pub)], "groups": ["canary"]},
        "site-b": {"public_keys": [str(pub)]},
    }}))  # fmt: skip
    return path


def _site_signer(tmp_path: Path) -> Signer:
    """The key of site-a (and site-b) of :func:`_registry`: the site signs its command replies."""
    return Signer.from_file(tmp_path / "keys" / "a.key")


def test_statuses_and_replies_are_kept_newest_first(tmp_path: Path, db_url: str) -> None:  # noqa: F811
    registry = _registry(tmp_path)
    site = _site_signer(tmp_path)
    db = open_db(db_url)
    rx = Receiver(db, SiteRegistry.load(registry), Signer.from_file(centre_pair(registry)[0]))
    try:
        online = Status(site_id="site-a", state="online", ts=1000.0, buffer=BufferStats(depth=7, bytes=1),
                        config_version=3, update_state="idle", healthy=True, readings_per_s=4.5)  # fmt: skip
        rx.handle_status("kbe/site-a/status", sign_status(online, site))
        older = online.model_copy(update={"ts": 900.0, "config_version": 2})
        rx.handle_status("kbe/site-a/status", sign_status(older, site))
        offline = Status(site_id="site-a", state="offline", ts=1100.0)
        rx.handle_status("kbe/site-a/status", sign_status(offline, site))
        # Another site's status on this topic, an unregistered site, and an unsigned one: not kept.
        assert rx.handle_status("kbe/site-b/status", sign_status(online, site)) is None
        forged = online.model_copy(update={"site_id": "site-x"})
        assert rx.handle_status("kbe/site-x/status", sign_status(forged, site)) is None
        newer = online.model_copy(update={"ts": 2000.0, "config_version": 9})
        assert rx.handle_status("kbe/site-a/status", newer.model_dump_json().encode()) is None
        assert rx.counters["status_unsigned"] == 1
        reply = CommandReply(site_id="site-a", command_id="u-1", outcome="accepted", reason="committed", ts=1.0,
                             phase="committed", version=3)  # fmt: skip
        for _ in range(2):
            rx.handle_reply("kbe/site-a/up/cmd-reply", site.small_frame(reply, reply.command_id))
        # An unsigned reply, and one signed by a key site-a does not have: not kept.
        rx.handle_reply("kbe/site-a/up/cmd-reply",
                               reply.model_copy(update={"command_id": "u-2"}).model_dump_json().encode())  # fmt: skip
        rogue = Signer.from_file(generate_keypair(tmp_path / "rogue", "rogue")[0])
        rx.handle_reply("kbe/site-a/up/cmd-reply", rogue.small_frame(reply.model_copy(update={"command_id": "u-3"})))
        db.record_rejection("site-b", "b-1", "bad-signature", "x", "kbe/site-b/up/batch", 10, "rx")
        rows = {r.site_id: r for r in site_rows(db, ["site-a", "site-b"], now=1200.0)}
        assert db.fetch("SELECT COUNT(*) FROM command_replies")[0][0] == 1
    finally:
        db.close()
    a, b = rows["site-a"], rows["site-b"]
    assert (a.state, a.config_version, a.update_state, a.buffer_depth, a.healthy) == ("offline", 3, "idle", 7, True)
    assert a.readings_per_s == 4.5
    assert (b.state, b.rejections) == ("never seen", 1)
    table = render(list(rows.values()))
    assert "site-a" in table
    assert "never seen" in table


def test_centre_sites_cli_and_config_body(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    url = f"sqlite:///{tmp_path / 'centre.db'}"
    db = open_db(url)
    db.record_status(Status(site_id="site-a", state="online", ts=1.0, config_version=5))
    db.close()
    out = CliRunner().invoke(cli, ["centre", "sites", "--db", url, "--sites", str(registry), "--group", "canary"])
    assert out.exit_code == 0, out.output
    assert "site-a" in out.output
    assert "site-b" not in out.output

    site = {"site": {"id": "site-a", "name": "A", "location": {"lat": 21.0, "lon": 106.0}},
            "health": {"listen": None}}  # fmt: skip
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(yaml.safe_dump(site))
    new.write_text(yaml.safe_dump({**site, "logging": {"level": "DEBUG"}}))
    body = config_update_body(new, 6, 30.0, old, 5)
    assert body["patch"] == {"logging": {"level": "DEBUG"}}
    assert body["base_version"] == 5
    new.write_text(yaml.safe_dump({**site, "logging": {"level": "LOUD"}}))
    with pytest.raises(ConfigError) as err:
        config_update_body(new, 6, 30.0)
    assert "logging.level" in err.value.problems[0]


def test_centre_follow_prints_replies(tmp_path: Path) -> None:
    import threading
    import time

    import paho.mqtt.client as mqtt

    from tests.brokers import Mosquitto

    key, _ = generate_keypair(tmp_path / "keys", "centre")
    registry = _registry(tmp_path)
    site = _site_signer(tmp_path)
    with Mosquitto(tmp_path / "broker") as broker:
        result: dict[str, object] = {}

        def follow() -> None:
            argv = ["centre", "follow", "--broker", broker.url, "--allow-plaintext", "--key", str(key),
                    "--sites", str(registry), "--for", "4"]  # fmt: skip
            result["out"] = CliRunner().invoke(cli, argv)

        t = threading.Thread(target=follow)
        t.start()
        time.sleep(2.0)
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="site-a-test")
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        reply = CommandReply(site_id="site-a", command_id="u-9", outcome="failed", ts=1.0, phase="rolled-back",
                             version=9, reason="rolled back to version 8: device meter-1 did not poll")  # fmt: skip
        # An unsigned reply is not shown; the one signed by site-a's key is.
        forged = reply.model_copy(update={"command_id": "u-8"})
        pub.publish("kbe/site-a/up/cmd-reply", forged.model_dump_json(), qos=1).wait_for_publish(5)
        pub.publish("kbe/site-a/up/cmd-reply", site.small_frame(reply, reply.command_id), qos=1).wait_for_publish(5)
        t.join(20)
        pub.loop_stop()
        pub.disconnect()
    out = result["out"]
    assert out.exit_code == 0, out.output  # type: ignore[attr-defined]
    assert "site-a: u-9 failed rolled-back rolled back to version 8" in out.output  # type: ignore[attr-defined]
    assert "u-8" not in out.output  # type: ignore[attr-defined]


def test_the_centre_link_keeps_only_statuses_its_sites_signed(tmp_path: Path) -> None:
    import paho.mqtt.client as mqtt

    from provisioning.centre.link import CentreLink
    from sync.mqtt import LinkOptions
    from tests.brokers import Mosquitto

    key, _ = generate_keypair(tmp_path / "keys", "centre")
    registry = _registry(tmp_path)
    site = _site_signer(tmp_path)
    rogue = Signer.from_file(generate_keypair(tmp_path / "rogue", "rogue")[0])
    genuine = Status(site_id="site-a", state="online", ts=10.0, config_version=4)
    forged = genuine.model_copy(update={"ts": 20.0, "config_version": 99})
    with Mosquitto(tmp_path / "broker") as broker:
        link = CentreLink(LinkOptions(broker=broker.url, client_id="centre-test"), Signer.from_file(key),
                          SiteRegistry.load(registry)).start()  # fmt: skip
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="site-a-test")
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        try:
            for payload in (forged.model_dump_json().encode(), sign_status(forged, rogue),
                            sign_status(forged.model_copy(update={"site_id": "site-x"}), site)):  # fmt: skip
                pub.publish("kbe/site-a/status", payload, qos=1).wait_for_publish(5)
            pub.publish("kbe/site-a/status", sign_status(genuine, site), qos=1).wait_for_publish(5)
            assert link.wait(lambda: "site-a" in link.status, 10)
            assert link.wait(lambda: link.untrusted_status == 3, 5), link.untrusted_status
        finally:
            pub.loop_stop()
            pub.disconnect()
            link.stop()
    assert link.status == {"site-a": genuine}
