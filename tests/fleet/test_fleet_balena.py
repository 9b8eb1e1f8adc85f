"""``edge-agent fleet`` through balena-sdk against a local server that answers the balena API as the
real API does (tests/fleet/fake_balena.py: a fake, because the real balena API cannot run here).

balena-sdk is pointed at it the way an operator points it at any balena API: ``api_endpoint`` in
``balena.cfg`` in the SDK's data directory (``--balena-dir``), the key in ``BALENA_API_KEY``.
The devices are simulated: each follows its pin a moment later, restarts its "agent", and that agent
reports its health with the agent's own reporter (agent/fleet_report.py) using a device API key.
One test runs the real ``edge-agent run`` with the balena environment and reads its tag back.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("balena", reason="balena-sdk is the operator extra")

from agent.fleet_report import HEALTH_TAG, BalenaHealthReporter, decode
from hil.procs import REPO, ManagedProcess, agent_argv, agent_env, free_port
from tests.fleet.fake_balena import FakeBalena, parse_filter

OLD, GOOD, BAD = "0" * 40, "a" * 40, "b" * 40
FLEET = "kbe/bacninh"


class Fleet:
    """The fake API with one fleet, three releases and N simulated devices with agents."""

    def __init__(self, tmp: Path, n: int) -> None:
        self.api = FakeBalena()
        app = self.api.add(
            "application", id=1, slug=FLEET, app_name="bacninh", should_track_latest_release=True
        )
        self.rel = {
            c: self.api.add("release", commit=c, status="success", belongs_to__application=1)["id"]
            for c in (OLD, GOOD, BAD)
        }
        app["should_be_running__release"] = {"__id": self.rel[OLD]}
        self.uuids = []
        for i in range(n):
            uuid = f"{i:02d}" + "c" * 30
            self.api.add(
                "device",
                uuid=uuid,
                device_name=f"bn-site-{i:02d}",
                is_online=True,
                last_connectivity_event="2026-12-06T11:00:00.000Z",
                belongs_to__application=1,
                is_running__release=self.rel[OLD],
                is_pinned_on__release=None,
            )
            self.api.device_keys[f"device-key-{i}"] = uuid
            self.uuids.append(uuid)
        self.endpoint = self.api.start()
        self.dir = tmp / "balena"
        self.api.write_balena_cfg(self.dir, self.endpoint)
        self.reporters: dict[str, BalenaHealthReporter] = {}
        self.env_seen: dict[str, list] = {}
        self.silent: set[str] = set()  # devices whose agent does not report
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def id_of(self, uuid: str) -> int:
        row = self.api.row("device", uuid=uuid)
        assert row is not None
        return int(row["id"])

    def device(self, uuid: str) -> dict:
        row = self.api.row("device", uuid=uuid)
        assert row is not None
        return row

    def simulate(self, delay_s: float = 0.2) -> None:
        """Devices take their target release a moment later; their agents then report every 0.2 s."""

        def loop() -> None:
            app = self.api.row("application", id=1)
            assert app is not None
            while not self.stop.is_set():
                for i, uuid in enumerate(self.uuids):
                    if uuid in self.silent:
                        continue
                    dev = self.device(uuid)
                    target = (dev["is_pinned_on__release"] or app["should_be_running__release"])["__id"]
                    if dev["is_running__release"]["__id"] != target:
                        time.sleep(delay_s / len(self.uuids))
                        with self.api.lock:
                            dev["is_running__release"] = {"__id": target}
                        self.reporters.pop(uuid, None)  # the agent restarts with the new release
                    with self.api.lock:
                        env = sorted(
                            (r["name"], r["value"])
                            for r in self.api.tables["device_environment_variable"]
                            if r["device"]["__id"] == dev["id"]
                        )
                    if self.env_seen.get(uuid, []) != env:
                        self.env_seen[uuid] = env
                        self.reporters.pop(uuid, None)  # the supervisor restarts a service on a new variable
                    running_bad = dev["is_running__release"]["__id"] == self.rel[BAD]
                    rep = self.reporters.get(uuid)
                    if rep is None:
                        rep = BalenaHealthReporter(
                            self.endpoint,
                            f"device-key-{i}",
                            uuid,
                            health=lambda bad=running_bad: _report(not bad),
                            interval_s=0.2,
                        )
                        self.reporters[uuid] = rep
                    with contextlib.suppress(OSError):  # like the agent's reporter: retried next time
                        rep.publish_once()
                self.stop.wait(0.2)

        self.thread = threading.Thread(target=loop, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(10)
        self.api.stop()

    def fleet(self, *args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
        env = {**agent_env(), "BALENA_API_KEY": self.api.api_key, "HOME": str(self.dir.parent)}
        proc = subprocess.run(
            agent_argv("fleet", "--fleet", FLEET, "--balena-dir", str(self.dir), *args),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
        )
        if check is not None:
            assert proc.returncode == check, proc.stdout + proc.stderr
        return proc

    def pin_patches(self) -> list:
        return [
            r
            for r in self.api.writes()
            if r.path == "/v7/device" and "is_pinned_on__release" in (r.body or {})
        ]


def _report(ok: bool) -> dict:
    tasks = {
        "source:rs485": {
            "state": "running" if ok else "cooling-down",
            "restarts": 0 if ok else 5,
            "last_error": "" if ok else "DeviceTimeout: unit 1 did not answer",
        }
    }
    return {
        "ok": ok,
        "tasks": tasks,
        "writer": {"stalled": False},
        "sync": {"connected": True},
        "buffer": {"depth": 0},
    }


@pytest.fixture
def fleet(tmp_path: Path):
    f = Fleet(tmp_path, 6)
    yield f
    f.close()


FAST = ["--watch", "1s", "--poll", "0.2s", "--update-timeout", "60s", "--stale", "30s"]


def test_status_lists_release_online_last_seen_and_the_agents_own_health(fleet: Fleet) -> None:
    fleet.api.row("device", uuid=fleet.uuids[5])["is_online"] = False
    fleet.silent = {fleet.uuids[3], fleet.uuids[2]}
    old = BalenaHealthReporter(fleet.endpoint, "device-key-3", fleet.uuids[3], health=lambda: _report(True))
    old.started -= 7200
    old.publish_once()
    stale = fleet.api.row("device_tag", device=fleet.id_of(fleet.uuids[3]), tag_key=HEALTH_TAG)
    stale["value"] = stale["value"].replace('"t":', '"t":1.0,"x":')  # an agent that went quiet long ago
    fleet.simulate()
    deadline = time.monotonic() + 15
    while fleet.api.tag(fleet.uuids[4], HEALTH_TAG) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    out = fleet.fleet("status").stdout
    lines = {line.split()[0]: line for line in out.splitlines()[1:-1]}
    assert len(lines) == 6
    assert " yes " in lines["bn-site-00"]
    assert lines["bn-site-00"].rstrip().endswith("ok")
    assert OLD[:7] in lines["bn-site-00"]
    assert " no " in lines["bn-site-05"]
    assert lines["bn-site-02"].rstrip().endswith("no report")
    assert "stale (" in lines["bn-site-03"]
    assert out.splitlines()[-1] == "6 devices, 5 online, 4 healthy"
    rows = json.loads(fleet.fleet("status", "--json").stdout)
    assert [r["health"] for r in rows][:3] == ["ok", "ok", "no report"]
    assert rows[0]["release"] == OLD
    assert rows[0]["pinned"] is None
    assert rows[0]["uplink"] is True
    assert rows[0]["last_seen"] == pytest.approx(1796554800.0)  # 2026-12-06T11:00:00Z
    # The SDK's requests are the balena API's: the fleet by slug, its devices with expanded
    # releases, the health tags of the fleet's devices.
    gets = [r for r in fleet.api.requests if r.method == "GET"]
    assert any(
        r.path == "/v7/application" and r.query["$filter"] == f"(slug eq '{FLEET}') or (uuid eq '{FLEET}')"
        for r in gets
    )
    dev_q = next(r.query for r in gets if r.path == "/v7/device" and "$expand" in r.query)
    assert dev_q["$filter"] == "belongs_to__application eq 1"
    assert dev_q["$expand"] == "is_running__release($select=commit),is_pinned_on__release($select=commit)"
    tag_q = next(r.query for r in fleet.api.requests if r.path == "/v7/device_tag" and r.method == "GET")
    assert tag_q["$filter"] == "(device/any(d:d/belongs_to__application eq 1)) and (tag_key eq 'kbe.health')"
    assert tag_q["$expand"] == "device($select=uuid)"
    # The agents' own upserts: POST first, then PATCH by natural key after the 409.
    posts = [r for r in fleet.api.writes() if r.path == "/v7/device_tag"]
    assert posts[0].method == "POST"
    assert set(posts[0].body) == {"device", "tag_key", "value"}
    patch = next(r for r in posts if r.method == "PATCH")
    assert parse_filter(patch.query["$filter"])[0] == "and"
    assert set(patch.body) == {"value"}


def test_canary_waves_then_promote(fleet: Fleet) -> None:
    fleet.simulate()
    out = fleet.fleet(
        "rollout", "--release", GOOD, "--canary", "1", "--waves", "50,100", "--id", "r-good", *FAST
    )
    assert "rollout r-good: all 3 waves passed" in out.stdout
    assert "wave 1/3 passed" in out.stdout
    assert "wave 3/3 passed" in out.stdout
    assert all(fleet.device(u)["is_pinned_on__release"] == {"__id": fleet.rel[GOOD]} for u in fleet.uuids)
    # Wave 1 pins one device by id, later waves a set of ids: the SDK's pin_to_release shape.
    patches = fleet.pin_patches()
    assert [p.query["$filter"] for p in patches] == [
        f"id eq {fleet.id_of(fleet.uuids[0])}",
        f"id in ({', '.join(str(fleet.id_of(u)) for u in fleet.uuids[1:3])})",
        f"id in ({', '.join(str(fleet.id_of(u)) for u in fleet.uuids[3:])})",
    ]
    assert all(p.method == "PATCH" and p.body == {"is_pinned_on__release": fleet.rel[GOOD]} for p in patches)
    assert fleet.api.tag(fleet.uuids[0], "kbe.rollout") is not None

    out = fleet.fleet("promote")
    assert "fleet now has release aaaaaaaaaaaa; 6 devices follow the fleet again" in out.stdout
    app_patch = next(r for r in fleet.api.writes() if r.path == "/v7/application(1)")
    assert app_patch.method == "PATCH"
    assert app_patch.body == {
        "should_be_running__release": fleet.rel[GOOD],
        "should_track_latest_release": False,
    }
    assert all(fleet.device(u)["is_pinned_on__release"] is None for u in fleet.uuids)
    assert all(fleet.api.tag(u, "kbe.rollout") is None for u in fleet.uuids)
    deletes = [r for r in fleet.api.writes() if r.method == "DELETE"]
    assert deletes
    assert all(
        r.path == "/v7/device_tag" and "tag_key eq 'kbe.rollout'" in r.query["$filter"] for r in deletes
    )


def test_bad_release_stops_at_the_canary_and_rolls_it_back(fleet: Fleet) -> None:
    fleet.simulate()
    proc = fleet.fleet(
        "rollout", "--release", BAD, "--canary", "1", "--waves", "50,100", "--id", "r-bad", *FAST, check=1
    )
    err = proc.stderr.strip().splitlines()
    assert (
        err[-1] == "edge-agent: error: rollout r-bad stopped at wave 1/3; 1 devices rolled back, 0 waves kept"
    )
    assert "agent unhealthy: source:rs485 cooling down: DeviceTimeout" in proc.stderr
    assert "Traceback" not in proc.stderr
    canary = fleet.id_of(fleet.uuids[0])
    patches = fleet.pin_patches()
    assert [(p.query["$filter"], p.body) for p in patches] == [
        (f"id eq {canary}", {"is_pinned_on__release": fleet.rel[BAD]}),
        (f"id eq {canary}", {"is_pinned_on__release": None}),  # back to tracking the fleet
    ]
    assert fleet.device(fleet.uuids[0])["is_pinned_on__release"] is None
    assert fleet.api.tag(fleet.uuids[0], "kbe.rollout") is None
    # No other device was touched. The reason above is the agent's report, not the update timeout:
    # the wave stopped on the first unhealthy report.
    assert all(fleet.device(u)["is_running__release"]["__id"] == fleet.rel[OLD] for u in fleet.uuids[1:])


def test_rollback_a_wave_and_roll_out_a_variable(fleet: Fleet) -> None:
    fleet.simulate()
    fleet.fleet("rollout", "--release", GOOD, "--canary", "1", "--waves", "100", "--id", "r1", *FAST)
    out = fleet.fleet("rollback", "--rollout", "r1", "--wave", "2")
    assert out.stdout.startswith("rolled back 5 devices")
    assert fleet.device(fleet.uuids[0])["is_pinned_on__release"] == {"__id": fleet.rel[GOOD]}
    assert all(fleet.device(u)["is_pinned_on__release"] is None for u in fleet.uuids[1:])
    proc = fleet.fleet("rollback", "--rollout", "nope", check=1)
    assert proc.stderr.strip() == "edge-agent: error: rollback: no device carries a matching rollout mark"
    proc = fleet.fleet("rollout", "--release", GOOD, "--waves", "50,10", check=2)
    assert "increasing percentages" in proc.stderr
    proc = fleet.fleet("rollout", "--release", "not-a-commit", check=2)
    assert "not a release commit" in proc.stderr
    assert "Traceback" not in proc.stderr

    fleet.fleet("rollout", "--env", "KBE_LOG_LEVEL=DEBUG", "--canary", "1", "--waves", "100", *FAST)
    posts = [
        r for r in fleet.api.writes() if r.path == "/v7/device_environment_variable" and r.method == "POST"
    ]
    assert len(posts) == 6
    assert posts[0].body == {"device": fleet.id_of(fleet.uuids[0]), "name": "KBE_LOG_LEVEL", "value": "DEBUG"}


def _site(tmp_path: Path, name: str, bad: bool) -> Path:
    cfg: dict = {
        "site": {"id": "bn-fleet-01", "name": "Fleet test", "location": {"lat": 21.19, "lon": 106.08}},
        "devices": [{"driver": "system", "name": "board", "period_s": 1}],
        "store": {"path": str(tmp_path / "store.db")},
        "health": {"listen": f"127.0.0.1:{free_port()}"},
    }
    if bad:  # a release whose config breaks polling: a sensor on a port that does not exist
        cfg["devices"].append(
            {
                "driver": "pms",
                "name": "pm",
                "line": {"type": "serial", "port": "/dev/ttyKBE-none", "baudrate": 9600},
            }
        )
        cfg["supervisor"] = {"max_restarts": 1, "window_s": 60, "backoff_s": 0.2}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_rollouts_gated_on_a_real_agent(tmp_path: Path) -> None:
    """``edge-agent run`` under balena's environment writes ``kbe.health`` from its own /health, and
    ``edge-agent fleet`` gates on it: a release whose config breaks polling stops at the canary and
    is rolled back; a good one passes. The device's supervisor is simulated: when the device's
    target release changes, it restarts the agent with that release's site config."""
    fleet = Fleet(tmp_path / "api", 1)
    uuid = fleet.uuids[0]
    good, bad = _site(tmp_path, "good.yaml", bad=False), _site(tmp_path, "bad.yaml", bad=True)
    configs = {fleet.rel[OLD]: good, fleet.rel[GOOD]: good, fleet.rel[BAD]: bad}
    env = {
        **agent_env(),
        "BALENA_API_URL": fleet.endpoint,
        "BALENA_API_KEY": "device-key-0",
        "BALENA_DEVICE_UUID": uuid,
        "KBE_HEALTH_TAG_INTERVAL_S": "1",
    }
    agent = ManagedProcess("agent", agent_argv("run", "--config", str(good)), tmp_path / "agent.log", env=env)
    agent.start()
    stop = threading.Event()

    def supervisor() -> None:
        app = fleet.api.row("application", id=1)
        assert app is not None
        while not stop.is_set():
            dev = fleet.device(uuid)
            target = (dev["is_pinned_on__release"] or app["should_be_running__release"])["__id"]
            if dev["is_running__release"]["__id"] != target:
                agent.stop()
                agent.argv = agent_argv("run", "--config", str(configs[target]))
                agent.start()
                with fleet.api.lock:
                    dev["is_running__release"] = {"__id": target}
            stop.wait(0.2)

    thread = threading.Thread(target=supervisor, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        tag = None
        while time.monotonic() < deadline:
            value = fleet.api.tag(uuid, HEALTH_TAG)
            tag = decode(value) if value else None
            if tag is not None and tag.at > tag.started:
                break
            time.sleep(0.2)
        assert tag is not None, agent.tail()
        assert tag.ok
        assert tag.uplink is None
        assert tag.why == ()
        assert abs(tag.started - time.time()) < 60
        out = fleet.fleet("status").stdout
        assert out.splitlines()[1].rstrip().endswith("ok")
        # The image's HEALTHCHECK probe finds the agent through the port in the same site config.
        probe = subprocess.run(
            [sys.executable, "-m", "agent.healthcheck", str(good)],
            env=agent_env(),
            capture_output=True,
            text=True,
            timeout=30,
            cwd=REPO,
        )
        assert probe.returncode == 0, probe.stdout + probe.stderr
        assert probe.stdout.strip().endswith("/health: ok")

        gate = [
            "--canary",
            "1",
            "--waves",
            "100",
            "--watch",
            "2s",
            "--poll",
            "0.3s",
            "--update-timeout",
            "90s",
        ]
        proc = fleet.fleet("rollout", "--release", BAD, *gate, check=1)
        assert "agent unhealthy: source:pm cooling down: TransportError" in proc.stderr, (
            proc.stdout + agent.tail()
        )
        assert fleet.device(uuid)["is_pinned_on__release"] is None  # rolled back: tracks the fleet again
        bad_start = decode(fleet.api.tag(uuid, HEALTH_TAG) or "")
        deadline = time.monotonic() + 60  # the operator waits for the site to be back on its good release
        while time.monotonic() < deadline:
            now = decode(fleet.api.tag(uuid, HEALTH_TAG) or "")
            if now is not None and now.ok and bad_start is not None and now.started != bad_start.started:
                break
            time.sleep(0.2)
        proc = fleet.fleet("rollout", "--release", GOOD, "--id", "r-real", *gate)
        assert "rollout r-real: all 1 waves passed" in proc.stdout, proc.stdout + proc.stderr + agent.tail()
        assert fleet.device(uuid)["is_running__release"] == {"__id": fleet.rel[GOOD]}
    finally:
        stop.set()
        thread.join(30)
        assert agent.stop() == 0
        fleet.close()


def test_device_set_never_imports_balena_sdk() -> None:
    """agent.app, the kinds and the CLI's run path load without balena-sdk (it is not in the image)."""
    code = (
        "import sys\n"
        "import agent.app, agent.cli, agent.config, kernel.kinds\n"
        "from kernel.kinds import DEVICE_KINDS, kind_module\n"
        "[kind_module(k) for k in DEVICE_KINDS]\n"
        "from agent.cli import cli\n"
        "cli.get_command(None, 'run'); cli.list_commands(None)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('balena', 'twisted', 'pine_client', 'OpenSSL'))\n"
        "assert not bad, bad\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(REPO)
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60, cwd=REPO)


def test_api_faults_are_retried_or_reported_in_one_line(fleet: Fleet) -> None:
    fleet.simulate()
    fleet.api.fail_gets["device_tag"] = 3  # the health reads of the first polls answer 503
    out = fleet.fleet("rollout", "--release", GOOD, "--canary", "1", "--waves", "100", "--id", "r-503", *FAST)
    assert out.stdout.count("balena API read failed") == 3
    assert "RequestError" in out.stdout
    assert "all 2 waves passed" in out.stdout

    proc = fleet.fleet("--fleet", "nobody/nothing", "status", check=1)
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("edge-agent: error: balena API (nobody/nothing): ApplicationNotFound")
    fleet.api.stop()
    proc = fleet.fleet("status", check=1)
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"edge-agent: error: balena API ({FLEET}): ConnectionError")


def test_reporter_upserts_then_patches(fleet: Fleet) -> None:
    uuid = fleet.uuids[1]
    rep = BalenaHealthReporter(fleet.endpoint, "device-key-1", uuid, health=lambda: _report(True))
    for _ in range(3):
        rep.publish_once()
    writes = [(r.method, r.path) for r in fleet.api.writes()]
    assert writes == [("POST", "/v7/device_tag"), ("PATCH", "/v7/device_tag"), ("PATCH", "/v7/device_tag")]
    device_lookup = next(r for r in fleet.api.requests if r.path == "/v7/device")
    assert device_lookup.query == {"$select": "id", "$filter": f"uuid eq '{uuid}'"}
    patch = fleet.api.writes()[1]
    assert patch.query["$filter"] == f"(device eq {fleet.id_of(uuid)}) and (tag_key eq 'kbe.health')"
    assert decode(fleet.api.tag(uuid, HEALTH_TAG) or "") is not None
    # A restarted agent finds its tag there: POST answers 409 and the upsert falls back to PATCH.
    again = BalenaHealthReporter(fleet.endpoint, "device-key-1", uuid, health=lambda: _report(False))
    again.publish_once()
    assert [(r.method, r.body is not None) for r in fleet.api.writes()[3:]] == [
        ("POST", True),
        ("PATCH", True),
    ]
    assert decode(fleet.api.tag(uuid, HEALTH_TAG) or "").ok is False


def test_bad_report_interval_is_a_config_error(tmp_path: Path) -> None:
    cfg = {
        "site": {"id": "bn-fleet-02", "name": "x", "location": {"lat": 21.1, "lon": 106.1}},
        "store": {"path": str(tmp_path / "store.db")},
        "health": {"listen": None},
    }
    (tmp_path / "site.yaml").write_text(yaml.safe_dump(cfg))
    env = {
        **agent_env(),
        "BALENA_API_URL": "http://127.0.0.1:9/",
        "BALENA_API_KEY": "k",
        "BALENA_DEVICE_UUID": "u",
        "KBE_HEALTH_TAG_INTERVAL_S": "often",
    }
    proc = subprocess.run(
        agent_argv("run", "--config", str(tmp_path / "site.yaml")),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "environment: KBE_HEALTH_TAG_INTERVAL_S: 'often' is not a number of seconds from 1 to 86400"
    )
    assert not (tmp_path / "store.db").exists()  # nothing was started
