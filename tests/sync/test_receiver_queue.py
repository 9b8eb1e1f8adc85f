"""The writer thread's hand-over: groups of what waits, bounded, and it survives a failing group."""

from __future__ import annotations

import threading
import time

from sync.receiver_queue import GroupWriter


def test_items_wait_while_one_group_is_written_then_go_together_in_order() -> None:
    groups: list[list[int]] = []
    first_taken, release = threading.Event(), threading.Event()

    def write(group: list[int]) -> None:
        groups.append(group)
        first_taken.set()
        release.wait(10)

    w = GroupWriter(write, maxsize=16, max_group=4)
    w.start()
    assert w.put(0)
    assert first_taken.wait(5)
    for i in range(1, 7):
        assert w.put(i)
    release.set()
    deadline = time.monotonic() + 10
    while sum(map(len, groups)) < 7 and time.monotonic() < deadline:
        time.sleep(0.01)
    w.stop()
    assert groups == [[0], [1, 2, 3, 4], [5, 6]]


def test_a_full_queue_holds_the_caller_and_stop_releases_it() -> None:
    release = threading.Event()
    w = GroupWriter(lambda _g: release.wait(10), maxsize=1, max_group=1)
    w.start()
    assert w.put(1)  # taken by the writer, which now waits
    time.sleep(0.2)
    assert w.put(2)  # fills the queue
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(w.put(3)))
    t.start()
    t.join(1.0)
    assert t.is_alive(), "a full queue must hold the MQTT thread (backpressure), not grow"
    threading.Timer(0.2, release.set).start()
    w.stop()
    t.join(5)
    assert result in ([False], [True])
    assert not t.is_alive()


def test_a_group_that_raises_is_logged_and_the_next_one_is_written(caplog) -> None:
    written: list[list[int]] = []

    def write(group: list[int]) -> None:
        if group == [1]:
            raise RuntimeError("database gone")
        written.append(group)

    w = GroupWriter(write, max_group=1)
    w.start()
    w.put(1)
    w.put(2)
    deadline = time.monotonic() + 5
    while not written and time.monotonic() < deadline:
        time.sleep(0.01)
    w.stop()
    assert written == [[2]]
    assert "could not store 1 batch(es)" in caplog.text
