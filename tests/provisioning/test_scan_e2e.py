"""`edge-agent provision scan` against emulators: one pty RS-485 line with devices at mixed unit ids
and two speeds, plus a Modbus TCP gateway. Every device is found and identified, the proposed
devices: section passes `config check`, and `edge-agent run` then reads every point correctly
(pinned values read back exactly, a device with swapped float words included)."""

from __future__ import annotations

import json
import sqlite3

import yaml

from sync.store import stored_readings
from tests.provisioning.rig import Site, run_cli, start_agent, stop_agent, wait_for


async def test_scan_finds_identifies_and_the_agent_reads_every_point(tmp_path):
    site = Site()
    await site.start()
    proc = None
    try:
        # 1. Walk two speeds on the RS-485 line.
        code, out, err = await run_cli(
            "provision",
            "scan",
            "--port",
            site.pty,
            "--bauds",
            "9600,19200",
            "--units",
            "1-24",
            "--margin-ms",
            "120",
            "--json",
            "--lang",
            "en",
        )
        assert code == 0, err
        first = json.loads(out)
        found = {d["unit"]: d for d in first["found"]}
        assert set(found) == {1, 7, 12, 23}
        assert found[1]["profile"] == "eastron-sdm120"
        assert found[1]["identified_by"] == "device identification (43/14)"
        assert found[1]["product"] == "SDM120-Modbus"
        assert found[7]["profile"] == "xy-md02"
        assert found[12]["profile"] == "eastron-sdm120"
        assert (found[12]["byte_order"], found[12]["word_order"]) == ("big", "little")
        assert found[23]["profile"] == "soil-7in1"
        assert {u: d["baudrate"] for u, d in found.items()} == site.bauds
        # Two speeds on one line is reported plainly, with what to do, not proposed as a broken config.
        assert any("more than one speed" in p and "23" in p for p in first["problems"])
        assert {d["unit"] for d in first["devices"]} == {1, 7, 12}
        assert first["wire_limit_s"] > 0
        # The progress line goes to stderr (not a terminal here: the final line only).
        assert "100%" in err

        # 2. The technician sets unit 23 to the line's speed and scans again, narrowed.
        site.line.set_baud(23, 9600)
        code, out, err = await run_cli(
            "provision",
            "scan",
            "--port",
            site.pty,
            "--bauds",
            "9600",
            "--units",
            "1-24",
            "--margin-ms",
            "120",
            "--out",
            str(tmp_path / "rtu.yaml"),
            "--name-prefix",
            "rtu-",
            "--lang",
            "vi",
        )
        assert code == 0, err
        assert "Quét" in out
        assert "tìm thấy 4 thiết bị" in out
        rtu = yaml.safe_load((tmp_path / "rtu.yaml").read_text())["devices"]
        assert {d["unit"] for d in rtu} == {1, 7, 12, 23}
        # The swapped device gets a derived profile file next to the proposal.
        swapped = next(d for d in rtu if d["unit"] == 12)
        assert swapped["profile"].endswith("eastron-sdm120-big-little.yaml")

        # 3. The Modbus TCP gateway (framing detected from tcp://).
        code, out, err = await run_cli(
            "provision",
            "scan",
            "--port",
            f"tcp://127.0.0.1:{site.tcp_port}",
            "--units",
            "1-8",
            "--out",
            str(tmp_path / "tcp.yaml"),
            "--name-prefix",
            "gw-",
            "--json",
        )
        assert code == 0, err
        gw = json.loads(out)
        assert gw["framing"] == "tcp"
        assert {d["unit"]: d["profile"] for d in gw["found"]} == {3: "eastron-sdm630", 5: "ysi-odo-ct"}
        tcp = yaml.safe_load((tmp_path / "tcp.yaml").read_text())["devices"]

        # 4. The proposal is the site's devices: section; config check accepts it.
        store = tmp_path / "store.db"
        cfg = {
            "site": {"id": "scan-01", "name": "Trạm quét", "location": {"lat": 21.15, "lon": 106.16}},
            "devices": [{**d, "poll": {"fast_s": 0.5, "slow_s": 1}} for d in rtu + tcp],
            "store": {"path": str(store)},
            "health": {"listen": None},
        }
        config = tmp_path / "site.yaml"
        config.write_text(yaml.safe_dump(cfg, allow_unicode=True))
        code, out, err = await run_cli("config", "check", str(config))
        assert code == 0, err
        assert "6 devices" in out

        # 5. The agent reads every point, and the pinned values come back exactly.
        log = tmp_path / "agent.log"
        proc = await start_agent(config, log)
        names = {d["unit"]: d["name"] for d in rtu} | {d["unit"]: d["name"] for d in tcp}

        def rows() -> dict[tuple[str, str], float]:
            if not store.exists():
                return {}
            try:
                with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
                    return {
                        (x.reading.device, x.reading.point): x.reading.value
                        for x in stored_readings(db)
                        if x.reading.quality == 0
                    }
            except sqlite3.OperationalError:  # created, schema not yet committed
                return {}

        def complete() -> bool:
            got = rows()
            devices = {**site.rtu, **site.tcp}
            return all((names[u], pt) in got for (u, pt) in site.pinned) and all(
                (names[u], p.name) in got for u, dev in devices.items() for p in dev.profile.points
            )

        await wait_for(complete, 40, "every device read")
        got = rows()
        for (unit, point), value in site.pinned.items():
            assert abs(got[(names[unit], point)] - value) < 0.051, (unit, point, got[(names[unit], point)])
        for unit, dev in {**site.rtu, **site.tcp}.items():
            read = {p for (d, p) in got if d == names[unit]}
            assert read == {p.name for p in dev.profile.points}, (
                unit,
                {p.name for p in dev.profile.points} - read,
            )
    finally:
        if proc is not None:
            await stop_agent(proc, tmp_path / "agent.log")
        await site.stop()
