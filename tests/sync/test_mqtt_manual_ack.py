"""MqttLink with ``on_message_acked``: the broker's PUBACK waits for ``done()`` (real Mosquitto).

The receiver relies on it: a batch it has taken but not committed is delivered again if it dies.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from sync.mqtt import LinkOptions, MqttLink
from tests.brokers import Mosquitto


def _link(broker: Mosquitto, got: list[bytes], ack: bool) -> tuple[MqttLink, threading.Event]:
    arrived = threading.Event()

    def on_message(_topic: str, payload: bytes, done: Callable[[], None]) -> None:
        got.append(payload)
        arrived.set()
        if ack:
            done()

    link = MqttLink(LinkOptions(broker=broker.url, client_id="manual-ack"), on_message_acked=on_message,
                    subscriptions=[("t/batch", 1)])  # fmt: skip
    link.start()
    assert link.wait_connected(10)
    time.sleep(0.5)  # the SUBSCRIBE goes out right after CONNACK
    return link, arrived


def _publish(broker: Mosquitto, payload: bytes) -> None:
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="manual-ack-pub", protocol=paho.MQTTv5)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    pub.publish("t/batch", payload, qos=1).wait_for_publish(10)
    pub.loop_stop()
    pub.disconnect()


def test_a_message_never_done_is_delivered_again_and_one_done_is_not(mosquitto: Mosquitto) -> None:
    got: list[bytes] = []
    link, arrived = _link(mosquitto, got, ack=False)
    _publish(mosquitto, b"one")
    assert arrived.wait(10)
    link.stop()  # dies holding it: no PUBACK went out
    again: list[bytes] = []
    link, arrived = _link(mosquitto, again, ack=True)
    assert arrived.wait(10), "the broker must deliver the unacknowledged message again"
    assert again == [b"one"]
    link.stop()
    after: list[bytes] = []
    link, arrived = _link(mosquitto, after, ack=True)
    assert not arrived.wait(2), "a message acknowledged with done() must not come back"
    link.stop()
    assert after == []
