"""The agent's metrics, through ``prometheus_client``: counters as counters, latencies as histograms,
every name under one prefix (``kbe_``), plus the process's own metrics and its build info.

Call sites name a metric when they first use it (``inc``, ``set``, ``observe``, ``gauge_callback``);
the label names are fixed by that first use. A name without the prefix gets it
(``modbus_device_online`` is exposed and read back as ``kbe_modbus_device_online``).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

PREFIX = "kbe_"
CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

disable_created_metrics()  # no *_created series: they double the exposition for nothing a site uses

log = logging.getLogger("kbe.metrics")


class _NoOp:
    """Stands in for a metric used as the wrong kind: a programming slip must not stop acquisition."""

    def inc(self, *_a: Any) -> None:
        pass

    set = observe = set_function = inc


_NOOP = _NoOp()


LabelKey = tuple[tuple[str, str], ...]
"""A label set as sorted (name, value) pairs."""

class Metrics:
    """Thread-safe counters, gauges and histograms in one ``CollectorRegistry``."""

    def __init__(self, process: bool = False, version: str = "") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._lock = threading.Lock()
        self._metrics: dict[str, tuple[str, Any, tuple[str, ...]]] = {}
        self._help: dict[str, str] = {}
        if process:
            ProcessCollector(namespace=PREFIX.rstrip("_"), registry=self.registry)
            PlatformCollector(registry=self.registry)
            Info(f"{PREFIX}build", "Version of the agent.", registry=self.registry).info({"version": version})

    @staticmethod
    def _name(name: str) -> str:
        return name if name.startswith(PREFIX) else PREFIX + name

    def describe(self, name: str, text: str) -> None:
        """Set the HELP text of a metric (before its first use)."""
        self._help[self._name(name)] = text

    def _metric(self, kind: str, name: str, labels: dict[str, str] | None) -> Any:
        full = self._name(name)
        with self._lock:
            entry = self._metrics.get(full)
            if entry is None:
                names = tuple(sorted(labels or {}))
                text = self._help.get(full, full.replace("_", " "))
                base = full.removesuffix("_total") if kind == "counter" else full
                if kind == "counter":
                    metric: Any = Counter(base, text, names, registry=self.registry)
                elif kind == "gauge":
                    metric = Gauge(base, text, names, registry=self.registry)
                else:
                    metric = Histogram(base, text, names, registry=self.registry, buckets=LATENCY_BUCKETS)
                entry = self._metrics[full] = (kind, metric, names)
        have, metric, names = entry
        if have != kind:
            log.warning("metric %s is a %s, not a %s: value dropped", full, have, kind)
            return _NOOP
        if not names:
            return metric
        given = labels or {}
        if set(given) != set(names):
            log.debug("metric %s: labels %s, expected %s", full, sorted(given), names)
        return metric.labels(*(str(given.get(n, "")) for n in names))

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

    def _samples(self, name: str) -> tuple[str, list[tuple[str, dict[str, str], float]]]:
        full = self._name(name)
        with self._lock:
            entry = self._metrics.get(full)
        if entry is None:
            return full, []
        kind, metric, _names = entry
        sample = {"counter": full.removesuffix("_total") + "_total", "histogram": full + "_sum"}.get(kind, full)
        out: list[tuple[str, dict[str, str], float]] = []
        for family in metric.collect():
            out.extend((s.name, s.labels, s.value) for s in family.samples if s.name == sample)
        return sample, out

    def get(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Current value of a counter or gauge (a histogram: its sum); 0 when never set."""
        want = {k: str(v) for k, v in (labels or {}).items()}
        _sample, samples = self._samples(name)
        for _n, got, value in samples:
            if got == want:
                return value
        return 0.0

    def series(self, name: str) -> dict[LabelKey, float]:
        """Every label set of a counter or gauge with its current value (a copy)."""
        return {tuple(sorted(labels.items())): value for _n, labels, value in self._samples(name)[1]}

    def total(self, name: str) -> float:
        """Sum of a metric over all its label sets."""
        return sum(value for _n, _labels, value in self._samples(name)[1])

    def render(self) -> str:
        """Prometheus text exposition format 0.0.4."""
        return generate_latest(self.registry).decode()
