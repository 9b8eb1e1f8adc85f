"""bench/paho_pair.py: the bare paho publisher and listener shared by bench_sync and bench_receiver."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from bench.paho_pair import timed_publish
from tests.brokers import Mosquitto


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A private broker for this test."""
    with Mosquitto(tmp_path / "broker") as b:
        yield b


def test_every_message_arrives_in_order_and_the_clock_stops_at_the_last(broker: Mosquitto) -> None:
    seen: list[tuple[str, bytes]] = []

    def arrived(m: paho.MQTTMessage) -> bool:
        seen.append((m.topic, bytes(m.payload)))
        return len(seen) == 50

    messages = [(f"t/{i % 3}/x", b"%d" % i) for i in range(50)]
    t = time.perf_counter()
    dt, reached = timed_publish(broker.port, messages, 5, listen="t/+/x", on_message=arrived, settle_s=0.2)
    assert reached
    assert seen == messages
    assert 0 < dt < time.perf_counter() - t - 0.2 + 1e-3  # the settle wait is not counted


def test_an_end_never_reached_is_reported_after_the_timeout(broker: Mosquitto) -> None:
    dt, reached = timed_publish(broker.port, [("a", b"1")], 1, listen="elsewhere",
                                on_message=lambda _m: True, settle_s=0.1, timeout_s=0.5)
    assert not reached
    assert dt >= 0.5
