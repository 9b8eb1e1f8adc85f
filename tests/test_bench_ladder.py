"""bench_ladder's gateway layout: distinct ports even when the OS hands a free port out twice."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

import bench.bench_ladder as ladder
from agent.config import load_config
from bench.modbus_tcp_throughput import write_profile


def test_split_gateways_gives_each_gateway_its_own_port(monkeypatch: pytest.MonkeyPatch) -> None:
    # The OS may return a port it just returned: 140 gateways of 10 units once put two on one port.
    ports = itertools.chain([5001, 5001, 5002, 5001, 5003], itertools.count(6000))
    monkeypatch.setattr(ladder, "free_port", lambda: next(ports))
    got = ladder.split_gateways(35, 10)
    assert [p for p, _ in got] == [5001, 5002, 5003, 6000]
    assert sum(n for _, n in got) == 35
    assert max(n for _, n in got) <= 10


def test_split_gateways_with_ten_units_each_makes_a_valid_site(tmp_path: Path) -> None:
    ladder.keys(tmp_path)
    gateways = ladder.split_gateways(1400, 10)
    assert len({p for p, _ in gateways}) == 140
    cfg = ladder.site_config(tmp_path, "mqtt://127.0.0.1:1883", write_profile(tmp_path), gateways, 1.0)
    site = load_config(cfg)  # raises ConfigError on two devices at one unit id of one port
    assert len(site.devices) == 1400


def test_skipped_polls_are_read_under_their_exposed_name() -> None:
    from kernel.metrics import Metrics

    m = Metrics()
    m.inc("modbus_polls_skipped_total", 3, labels={"bus": "tcp:127.0.0.1:5020"})
    exposed = [line for line in m.render().splitlines() if line.startswith(ladder.SKIPPED + "{")]
    assert exposed, m.render()  # the bench once read the unprefixed name and always saw 0


def test_runqueue_wait_is_read_from_schedstat() -> None:
    import os

    own = ladder.runqueue_wait_s(os.getpid())
    assert 0.0 < own < 3600.0  # this process has waited for a core at least once since it started
    assert ladder.runqueue_wait_s(2**22 + 7) == 0.0  # a pid that does not exist


def test_start_emulators_serves_every_gateway_until_stopped(tmp_path: Path) -> None:
    import socket

    gateways = ladder.split_gateways(6, 3)
    (emu,) = ladder.start_emulators(tmp_path, write_profile(tmp_path), gateways, 1)
    try:
        assert emu.running()
        for port, _units in gateways:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        emu.stop()
    assert not emu.running()
    assert (tmp_path / "logs" / "emulator0.log").is_file()
