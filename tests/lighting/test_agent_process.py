"""`edge-agent run` with a lighting section, its broker down, outputs on emulated Modbus lighting
controllers: it applies persisted overrides at start, survives a kill -9 (power cut), restores the
outputs after a restart, and records state changes in the store."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import pytest
import yaml

from control.lighting.emulator import LightingControllerEmulator
from control.lighting.outputs import OutputState
from sync.signing import generate_keypair
from sync.store import Store
from tests.conftest import agent_argv, agent_env, free_port
from tests.lighting.conftest import lighting_dict


def write_config(tmp_path: Path, ports: tuple[int, int], state_path: Path | None = None) -> Path:
    key, _pub = generate_keypair(tmp_path / "keys", "bn-01")
    _centre_key, centre_pub = generate_keypair(tmp_path / "keys", "centre")
    lighting = lighting_dict(tick_s=0.2, default_when_clock_unsynced=False)
    if state_path is not None:
        lighting["state_path"] = str(state_path)
    lighting["circuits"] = [
        {
            "name": f"m{i + 1}",
            "group": "route-1",
            "lamps": 10,
            "lamp_watts": 100,
            "output": {
                "type": "modbus",
                "host": "127.0.0.1",
                "port": port,
                "relay_coil": 0,
                "dim_register": 1,
                "timeout_s": 1,
            },
        }
        for i, port in enumerate(ports)
    ]
    cfg = {
        "site": {"id": "bn-01", "name": "Bắc Ninh", "location": {"lat": 21.19, "lon": 106.08}},
        "devices": [{"driver": "lighting", "name": "street"}],
        "store": {"path": str(tmp_path / "store.db")},
        # The uplink points at a port where no broker listens: the centre is unreachable throughout.
        "sync": {
            "broker": f"mqtt://127.0.0.1:{free_port()}",
            "allow_plaintext": True,
            "centre_public_keys": [str(centre_pub)],
            "signing_key_file": str(key),
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 1.0,
        },
        "health": {"listen": None},
        "lighting": lighting,
    }
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    return path


async def wait_for(cond, timeout: float = 45.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not met in time"
        await asyncio.sleep(0.1)


async def start_agent(config: Path, log: Path) -> asyncio.subprocess.Process:
    with open(log, "ab") as err:  # a file, not a pipe: a chatty agent can never block on a full pipe
        return await asyncio.create_subprocess_exec(
            *agent_argv("run", "--config", str(config)), env=agent_env(), stdout=err, stderr=err
        )


async def stop_agent(proc: asyncio.subprocess.Process, log: Path) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), 30)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(
            "agent did not stop within 30 s of SIGTERM:\n" + log.read_text()[-4000:]
        ) from None
    assert proc.returncode == 0, log.read_text()[-4000:]


@pytest.mark.parametrize("configured", [True, False], ids=["state_path", "default-beside-the-store"])
def test_agent_runs_lighting_offline_and_after_power_cut(tmp_path, configured):
    """With ``state_path`` set, or without it: then the state lives beside the store (the agent's
    state directory, the one place the systemd unit lets it write)."""
    ports = (free_port(), free_port())
    state = tmp_path / "lighting.json" if configured else tmp_path / "lighting-state.json"
    config = write_config(tmp_path, ports, state if configured else None)
    now = time.time()

    def overrides(m2_until: float) -> None:
        """The state file as the agent writes it: overrides received from the centre before."""
        body = {
            "m1": {"level": 60, "until": now + 3600, "set_at": now, "command_id": "op-1"},
            "m2": {"level": 0, "until": m2_until, "set_at": now, "command_id": "op-2"},
        }
        state.write_text(json.dumps({"version": 1, "overrides": body, "profiles": {}}))

    overrides(now + 3600)

    log = tmp_path / "agent.log"

    async def main():
        emus = [LightingControllerEmulator(initial=OutputState(True, 100)) for _ in ports]
        for emu, port in zip(emus, ports, strict=True):
            await emu.start("127.0.0.1", port)
        try:
            proc = await start_agent(config, log)
            await wait_for(
                lambda: emus[0].state() == OutputState(True, 60) and emus[1].state() == OutputState(False, 0)
            )
            proc.send_signal(signal.SIGKILL)  # power cut
            await proc.wait()
            emus[0].force(OutputState(False, 0))  # lamps dark while the board is down
            # m2's override ends during the outage (as if it had been sent with that end time).
            overrides(time.time() + 0.5)
            await asyncio.sleep(1.0)
            proc = await start_agent(config, log)
            await wait_for(lambda: emus[0].state() == OutputState(True, 60))
            await asyncio.sleep(1.0)
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, err.decode()
        finally:
            for emu in emus:
                await emu.stop()

    asyncio.run(main())
    assert "sync on" in log.read_text()  # the uplink was configured, and never reached
    store = Store(tmp_path / "store.db", "bn-01")
    try:
        readings = [s.reading for s in store.pending(10_000)]
    finally:
        store.close()
    points = {(r.point, r.value) for r in readings}
    assert ("m1.mode", "override") in points
    assert ("m2.override", "expired") in points  # expired while the board was down, noticed at restart
    assert all(r.device == "street" for r in readings if r.point.startswith("m"))
    assert not state.with_suffix(".json.corrupt").exists()
    assert "m2" not in json.loads(state.read_text())["overrides"]  # the agent kept its state in that file
