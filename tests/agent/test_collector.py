"""The garbage collector's settings for a long-running agent (:mod:`kernel.collector`).

Unit checks of the three calls, then ``edge-agent run`` itself: once started it has frozen its
start-up objects and set the thresholds, and says so on ``/metrics``.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import subprocess
import urllib.request
from collections.abc import Iterator

import pytest
import yaml

from hil.procs import free_port
from kernel import collector
from tests.agent.test_footprint import meter_port, meter_site  # noqa: F401 - fixture
from tests.conftest import agent_argv, agent_env
from tests.sync.conftest import site_keys, wait_for  # noqa: F401 - fixtures


@pytest.fixture
def restored_collector() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_tune_sets_the_thresholds(restored_collector) -> None:
    gc.set_threshold(700, 10, 10)
    collector.tune()
    assert gc.get_threshold() == collector.THRESHOLDS
    assert collector.THRESHOLDS[0] >= 10_000  # a young collection per 10,000 new containers, not 700


def test_freeze_keeps_what_lives_out_of_collections_and_thaw_gives_it_back(restored_collector) -> None:
    kept = [[i] for i in range(1000)]  # containers alive at "start-up"
    frozen = collector.freeze_started()
    assert frozen == gc.get_freeze_count() >= len(kept)
    assert not any(gc.is_tracked(x) and x in gc.get_objects(generation=2) for x in kept[:3])
    collector.thaw()
    assert gc.get_freeze_count() == 0
    assert any(x is kept[0] for x in gc.get_objects())


def test_a_cycle_made_after_the_freeze_is_still_collected(restored_collector) -> None:
    collector.tune()
    collector.freeze_started()

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a  # type: ignore[attr-defined]
    ref = id(a)
    del a, b
    assert gc.collect() >= 2
    assert all(id(o) != ref for o in gc.get_objects())


def test_sweep_collects_everything_on_its_period_until_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[object, ...]] = []
    monkeypatch.setattr(gc, "collect", lambda *args: calls.append(args) or 0)

    async def body() -> tuple[float, int]:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        started = loop.time()
        task = asyncio.create_task(collector.sweep(stop, every_s=0.05))
        while len(calls) < 4 and loop.time() - started < 10:
            await asyncio.sleep(0.01)
        took = loop.time() - started
        stop.set()
        await asyncio.wait_for(task, 1.0)  # returns at once when stopped
        return took, len(calls)

    took, at_stop = asyncio.run(body())
    assert at_stop >= 4
    assert took >= 4 * 0.05  # four collections take four periods: never sooner
    assert all(args == () for args in calls)  # full collections: every generation
    assert len(calls) == at_stop  # none after the stop
    assert collector.FULL_EVERY_S <= 120  # cyclic garbage waits at most two minutes


def _metrics(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("kbe_gc_"):
            name, value = line.split()
            out[name] = float(value)
    return out


def test_edge_agent_run_freezes_its_start_up_objects(tmp_path, site_keys, meter_port) -> None:  # noqa: F811
    port = free_port()
    cfg = meter_site(meter_port, tmp_path / "agent-store.db", health=f"127.0.0.1:{port}")
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen(
        agent_argv("run", "--config", str(path)), env=agent_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    seen: dict[str, float] = {}

    def frozen() -> bool:
        try:
            seen.update(_metrics(f"http://127.0.0.1:{port}/metrics"))
        except OSError:
            return False
        return seen.get("kbe_gc_frozen_objects", 0) > 0

    try:
        wait_for(frozen, 30, "kbe_gc_frozen_objects on /metrics")
        at_start = seen["kbe_gc_full_collections"]
        # A one-meter site makes almost no new containers: its next full collection is the sweep's.
        wait_for(lambda: frozen() and seen["kbe_gc_full_collections"] > at_start, collector.FULL_EVERY_S + 30,
                 "a full collection from the sweep")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    # The whole agent (modules, config, the device, its plans) is thousands of containers.
    assert seen["kbe_gc_frozen_objects"] > 10_000, seen
    assert "kbe_gc_full_collections" in seen
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
