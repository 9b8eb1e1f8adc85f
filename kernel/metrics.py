"""The agent's metrics: counters, gauges and latency histograms kept in plain Python, every name under
one prefix (``kbe_``), exposed in the Prometheus text format with the process's own metrics and its
build info.

Call sites name a metric when they first use it (``inc``, ``set``, ``observe``, ``gauge_callback``);
the label names are fixed by that first use. A name without the prefix gets it
(``modbus_device_online`` is exposed and read back as ``kbe_modbus_device_online``).

``prometheus_client`` (with the ``http.server``, ``wsgiref`` and ``urllib`` it imports) is loaded by
the first :meth:`Metrics.render` only, that is when ``/metrics`` is scraped: a site that serves no
endpoint never loads it, and ``/health`` and the local page read values with :meth:`Metrics.get`.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

PREFIX = "kbe_"
CONTENT_TYPE = "text/plain; version=1.0.0; charset=utf-8"
"""``prometheus_client.exposition.CONTENT_TYPE_LATEST``, without importing it."""
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

log = logging.getLogger("kbe.metrics")


def _no_created_series() -> None:
    """No ``*_created`` series from ``prometheus_client`` in this process (they double an exposition
    for nothing a site or the centre reads): switched off now if it is loaded, else when it loads."""
    client = sys.modules.get("prometheus_client.metrics")
    if client is not None:
        client.disable_created_metrics()
    os.environ.setdefault("PROMETHEUS_DISABLE_CREATED_SERIES", "True")


_no_created_series()  # the receiver's own registry relied on this module switching them off


class _NoOp:
    """Stands in for a metric used as the wrong kind: a programming slip must not stop acquisition."""

    def inc(self, *_a: Any) -> None:
        pass

    set = observe = set_function = inc


_NOOP = _NoOp()


LabelKey = tuple[tuple[str, str], ...]
"""A label set as sorted (name, value) pairs."""


class _Value:
    """One counter or gauge series; a gauge may read its value from a function instead."""

    __slots__ = ("_counter", "_fn", "_lock", "_value")

    def __init__(self, counter: bool) -> None:
        self._counter = counter
        self._lock = threading.Lock()
        self._value = 0.0
        self._fn: Callable[[], float] | None = None

    def inc(self, amount: float = 1.0) -> None:
        if self._counter and amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        with self._lock:
            self._value += amount

    def set(self, value: float) -> None:
        with self._lock:
            self._value = float(value)

    def set_function(self, fn: Callable[[], float]) -> None:
        self._fn = fn

    def observe(self, _value: float) -> None:  # never reached: kinds are checked before
        raise TypeError("observe() on a counter or gauge")

    def read(self) -> float:
        return self._fn() if self._fn is not None else self._value


class _Buckets:
    """One histogram series: per-bucket counts (the last one is +Inf) and the sum."""

    __slots__ = ("_lock", "counts", "sum")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        i = bisect_left(LATENCY_BUCKETS, value)  # the first bound >= value: buckets are "le"
        with self._lock:
            self.counts[i] += 1
            self.sum += value

    def read(self) -> float:
        return self.sum

    def cumulative(self) -> tuple[list[float], float]:
        with self._lock:
            counts, total = list(self.counts), self.sum
        out, running = [], 0
        for c in counts:
            running += c
            out.append(float(running))
        return out, total


class _Family:
    """A metric: its kind, help text, label names and one series per label-value tuple."""

    __slots__ = ("help", "kind", "labelnames", "lock", "name", "series")

    def __init__(self, kind: str, name: str, text: str, labelnames: tuple[str, ...]) -> None:
        self.kind, self.name, self.help, self.labelnames = kind, name, text, labelnames
        self.lock = threading.Lock()
        self.series: dict[tuple[str, ...], Any] = {}
        if not labelnames:
            self.series[()] = self._new()

    def _new(self) -> Any:
        return _Buckets() if self.kind == "histogram" else _Value(self.kind == "counter")

    def child(self, values: tuple[str, ...]) -> Any:
        got = self.series.get(values)
        if got is None:
            with self.lock:
                got = self.series.setdefault(values, self._new())
        return got

    def items(self) -> list[tuple[tuple[str, ...], Any]]:
        with self.lock:
            return list(self.series.items())


class Metrics:
    """Thread-safe counters, gauges and histograms; :meth:`render` gives the Prometheus exposition."""

    def __init__(self, process: bool = False, version: str = "") -> None:
        self._process = process
        self._version = version
        self._lock = threading.Lock()
        self._metrics: dict[str, _Family] = {}
        self._help: dict[str, str] = {}
        self._registry: Any = None
        self._text: Any = None

    @staticmethod
    def _name(name: str) -> str:
        return name if name.startswith(PREFIX) else PREFIX + name

    def describe(self, name: str, text: str) -> None:
        """Set the HELP text of a metric (before its first use)."""
        self._help[self._name(name)] = text

    def _metric(self, kind: str, name: str, labels: dict[str, str] | None) -> Any:
        full = self._name(name)
        family = self._metrics.get(full)
        if family is None:
            with self._lock:
                family = self._metrics.get(full)
                if family is None:
                    text = self._help.get(full, full.replace("_", " "))
                    family = self._metrics[full] = _Family(kind, full, text, tuple(sorted(labels or {})))
        if family.kind != kind:
            log.warning("metric %s is a %s, not a %s: value dropped", full, family.kind, kind)
            return _NOOP
        names = family.labelnames
        if not names:
            return family.series[()]
        given = labels or {}
        if set(given) != set(names):
            log.debug("metric %s: labels %s, expected %s", full, sorted(given), names)
        return family.child(tuple(str(given.get(n, "")) for n in names))

    def bound(self, kind: str, name: str, labels: dict[str, str] | None = None) -> Any:
        """The series of a ``counter``, ``gauge`` or ``histogram`` with these labels, looked up once.

        Its ``inc``/``set``/``observe`` skip the per-call lookup; for hot paths that update the same
        series many times a second (a bus's per-device counters).
        """
        return self._metric(kind, name, labels)

    def inc(self, name: str, amount: float = 1.0, labels: dict[str, str] | None = None) -> None:
        """Add to a counter."""
        if amount:
            self._metric("counter", name, labels).inc(amount)
        else:
            self._metric("counter", name, labels)  # the series exists, at 0

    def set(self, name: str, value: float, labels: dict[str, str] | None = None) -> None:
        """Set a gauge."""
        self._metric("gauge", name, labels).set(value)

    def observe(self, name: str, value: float, labels: dict[str, str] | None = None) -> None:
        """Record a latency (seconds) in a histogram."""
        self._metric("histogram", name, labels).observe(value)

    def gauge_callback(self, name: str, fn: Callable[[], float]) -> None:
        """Register a gauge whose value is read when metrics are rendered (a failing one reads NaN)."""

        def safe() -> float:
            try:
                return float(fn())
            except Exception:  # a broken gauge must not break the endpoint
                log.debug("gauge %s failed", name, exc_info=True)
                return math.nan

        self._metric("gauge", name, None).set_function(safe)

    def _values(self, name: str) -> Iterator[tuple[dict[str, str], float]]:
        family = self._metrics.get(self._name(name))
        if family is None:
            return
        for key, series in family.items():
            yield dict(zip(family.labelnames, key, strict=True)), series.read()

    def get(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Current value of a counter or gauge (a histogram: its sum); 0 when never set."""
        want = {k: str(v) for k, v in (labels or {}).items()}
        for got, value in self._values(name):
            if got == want:
                return value
        return 0.0

    def series(self, name: str) -> dict[LabelKey, float]:
        """Every label set of a counter or gauge with its current value (a copy)."""
        return {tuple(sorted(labels.items())): value for labels, value in self._values(name)}

    def total(self, name: str) -> float:
        """Sum of a metric over all its label sets."""
        return sum(value for _labels, value in self._values(name))

    def families(self) -> list[_Family]:
        """The metrics in the order of their first use."""
        with self._lock:
            return list(self._metrics.values())

    def render(self) -> str:
        """Prometheus text exposition format 0.0.4 (imports ``prometheus_client`` on first use)."""
        from prometheus_client import generate_latest

        if self._registry is None:
            from kernel.metrics_export import AgentText, build_registry

            self._registry = build_registry(self, self._process, self._version)
            self._text = AgentText(self)
        return generate_latest(self._registry).decode() + self._text.render()
