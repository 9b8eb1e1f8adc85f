"""A bare paho publisher and listener, the MQTT baseline of the sync and receiver benchmarks.

Both connect to a broker on 127.0.0.1 with MQTT 5; the listener subscribes at QoS 1 and hands each
message to a callback that says when the last expected one has arrived; the publisher publishes
every message at QoS 1 with a bounded in-flight window, and the clock runs from the first publish
until that callback says so (or the timeout passes).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


def timed_publish(
    port: int,
    messages: Sequence[tuple[str, bytes]],
    inflight: int,
    *,
    listen: str,
    on_message: Callable[[paho.MQTTMessage], bool],
    listener_id: str = "bench-sub",
    settle_s: float = 0.5,
    timeout_s: float = 300.0,
) -> tuple[float, bool]:
    """Publish ``(topic, payload)`` messages at QoS 1; seconds until ``on_message`` returns True.

    ``listen`` is the listener's subscription; ``settle_s`` is waited after both connect, before
    the clock starts. Returns the seconds and whether the end was reached within ``timeout_s``.
    """
    done = threading.Event()

    def _on_message(_c: paho.Client, _u: object, m: paho.MQTTMessage) -> None:
        if on_message(m):
            done.set()

    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id=listener_id, protocol=paho.MQTTv5)
    sub.on_message = _on_message
    sub.connect("127.0.0.1", port)
    sub.subscribe(listen, qos=1)
    sub.loop_start()
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub", protocol=paho.MQTTv5)
    pub.max_inflight_messages_set(inflight)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    time.sleep(settle_s)
    t = time.perf_counter()
    for topic, payload in messages:
        pub.publish(topic, payload, qos=1)
    reached = done.wait(timeout_s)
    dt = time.perf_counter() - t
    for c in (pub, sub):
        c.loop_stop()
        c.disconnect()
    return dt, reached
