"""A device kind from another distribution, registered only by its entry point, reaches the config
schema, a HIL rig and the running agent: nothing in agent/ or hil/ names it.

The distribution is real as far as Python's packaging is concerned: a ``kbe_thermo`` package and a
``kbe_thermo-0.1.dist-info`` (METADATA, entry_points.txt) on ``sys.path``, which is exactly what
``pip install`` leaves in site-packages; ``importlib.metadata`` finds its entry point there.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import sys
from pathlib import Path

import pytest
import yaml

from agent.config import config_json_schema, parse_config
from hil.devices import EmulatorBank
from hil.rig import AgentSettings, parse_rig
from kernel.errors import ConfigError
from kernel.kinds import GROUP, KindRegistry
from sync.store import stored_readings
from tests.conftest import agent_argv, agent_env

SOURCE = Path(__file__).parent / "thermo_dist" / "kbe_thermo"
SITE = {"site": {"id": "thermo-site", "name": "Thermo", "location": {"lat": 21.18, "lon": 106.07}}}


@pytest.fixture
def thermo_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``kbe-thermo`` installed into a private site directory on ``sys.path``; returns that directory."""
    site = tmp_path / "site-packages"
    shutil.copytree(SOURCE, site / "kbe_thermo")
    info = site / "kbe_thermo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kbe-thermo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{GROUP}]\nthermo = kbe_thermo.driver\n")
    monkeypatch.syspath_prepend(str(site))
    yield site
    for name in [m for m in sys.modules if m == "kbe_thermo" or m.startswith("kbe_thermo.")]:
        del sys.modules[name]


def _device(**extra):
    return {"driver": "thermo", "name": "probe", "line": {"type": "pty", "path": "/dev/null"}, **extra}


def test_an_installed_kind_is_found_and_imported_only_when_a_site_names_it(thermo_dist):
    kinds = KindRegistry()
    assert "thermo" in kinds.names()
    parse_config(SITE | {"devices": [{"driver": "system", "name": "board"}]}, kinds=kinds)
    assert "kbe_thermo.driver" not in sys.modules
    cfg = parse_config(SITE | {"devices": [_device(period_s=5)]}, kinds=kinds)
    assert cfg.devices[0].driver == "thermo"
    assert cfg.devices[0].period_s == 5  # type: ignore[attr-defined]
    assert "kbe_thermo.driver" in sys.modules
    assert "kbe_thermo.emulator" not in sys.modules  # only a rig imports the emulator
    with pytest.raises(ConfigError) as err:
        parse_config(SITE | {"devices": [_device(period_s=0)]}, kinds=kinds)
    assert err.value.problems == ["devices[0].period_s: 0 is not valid: Input should be greater than or equal to 1"]


def test_without_its_entry_point_the_kind_is_unknown_and_named_as_such():
    kinds = KindRegistry()
    assert "thermo" not in kinds.names()
    with pytest.raises(ConfigError) as err:
        parse_config(SITE | {"devices": [_device()]}, kinds=kinds)
    assert err.value.problems[0].startswith("devices[0].driver: 'thermo' is not a known device kind (one of ")


def test_the_config_schema_has_the_kind(thermo_dist):
    schema = config_json_schema(KindRegistry())
    device_item = schema["properties"]["devices"]["items"]
    assert "thermo" in device_item["discriminator"]["mapping"]
    text = json.dumps(schema)
    assert '"const": "thermo"' in text


@pytest.mark.timeout(90)
def test_a_rig_emulates_it_and_the_agent_stores_its_readings(thermo_dist, tmp_path: Path):
    """Rig file -> the kind's own emulator on a pty -> generated site config -> ``edge-agent run``."""
    kinds = KindRegistry()
    rig = parse_rig(
        {"rig": "thermo", "duration_s": 30, "devices": [{"kind": "serial", "name": "probe", "sensor": "thermo"}]},
        kinds=kinds,
    )
    with pytest.raises(ConfigError, match=r"devices\[0\]\.sensor: 'thermo2' is not an emulated device kind"):
        parse_rig(
            {"rig": "x", "duration_s": 1, "devices": [{"kind": "serial", "name": "p", "sensor": "thermo2"}]},
            kinds=kinds,
        )
    store = tmp_path / "store.db"

    async def main() -> list[tuple[str, str, float]]:
        bank = EmulatorBank(rig, kinds=kinds)
        await bank.start()
        try:
            assert bank.ranges()["probe"] == {"temperature": (-40.0, 85.0), "humidity": (0.0, 100.0)}
            devices = bank.site_devices(AgentSettings())
            assert devices[0]["driver"] == "thermo"
            config = tmp_path / "site.yaml"
            config.write_text(
                yaml.safe_dump(SITE | {"devices": devices, "store": {"path": str(store)}, "health": {"listen": None}})
            )
            env = agent_env()
            env["PYTHONPATH"] = env["PYTHONPATH"] + os.pathsep + str(thermo_dist)
            log = (tmp_path / "agent.log").open("wb")
            proc = await asyncio.create_subprocess_exec(
                *agent_argv("run", "--config", str(config)), env=env, stdout=log, stderr=log
            )
            try:
                rows = await _wait_rows(store, proc, timeout=60.0)
            finally:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(proc.wait(), 20)
                log.close()
            assert proc.returncode == 0, (tmp_path / "agent.log").read_text()[-3000:]
            return rows
        finally:
            await bank.close()

    rows = asyncio.run(main())
    temps = [v for d, p, v in rows if (d, p) == ("probe", "temperature")]
    assert temps
    assert all(23.9 <= t <= 24.1 for t in temps)
    assert ("probe", "humidity", 60.0) in rows


async def _wait_rows(db: Path, proc, timeout: float) -> list[tuple[str, str, float]]:
    """Poll the agent's store (read-only) until it holds a temperature reading of the probe."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    rows: list[tuple[str, str, float]] = []
    while loop.time() < end and proc.returncode is None:
        if db.exists():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0) as con:
                    rows = [(x.reading.device, x.reading.point, x.reading.value) for x in stored_readings(con)
                            if x.reading.device == "probe"]
            except sqlite3.OperationalError:
                pass  # not created yet, or busy
            if any(p == "temperature" for _, p, _ in rows):
                return rows
        await asyncio.sleep(0.3)
    raise AssertionError(f"the agent stored no probe temperature (rows: {rows})")
