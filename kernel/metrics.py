"""A small metrics registry rendered as Prometheus text (counters and gauges with labels)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

LabelKey = tuple[tuple[str, str], ...]


def _labels(labels: dict[str, str] | None) -> LabelKey:
    return tuple(sorted((labels or {}).items()))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    """Thread-safe counters and gauges; gauges may also be callbacks read at render time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[LabelKey, float]] = {}
        self._gauges: dict[str, dict[LabelKey, float]] = {}
        self._callbacks: dict[str, Callable[[], float]] = {}
        self._help: dict[str, str] = {}

    def describe(self, name: str, text: str) -> None:
        """Set the HELP line of a metric."""
        self._help[name] = text

    def inc(self, name: str, amount: float = 1.0, labels: dict[str, str] | None = None) -> None:
        """Add to a counter."""
        key = _labels(labels)
        with self._lock:
            series = self._counters.setdefault(name, {})
            series[key] = series.get(key, 0.0) + amount

    def set(self, name: str, value: float, labels: dict[str, str] | None = None) -> None:
        """Set a gauge."""
        with self._lock:
            self._gauges.setdefault(name, {})[_labels(labels)] = value

    def gauge_callback(self, name: str, fn: Callable[[], float]) -> None:
        """Register a gauge whose value is read when metrics are rendered."""
        self._callbacks[name] = fn

    def get(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Current value of a counter or gauge (0 when never set)."""
        key = _labels(labels)
        with self._lock:
            if name in self._counters:
                return self._counters[name].get(key, 0.0)
            if name in self._gauges:
                return self._gauges[name].get(key, 0.0)
        if name in self._callbacks and not key:
            return self._callbacks[name]()
        return 0.0

    def series(self, name: str) -> dict[LabelKey, float]:
        """Every label set of a counter or gauge with its current value (a copy)."""
        with self._lock:
            return dict(self._counters.get(name) or self._gauges.get(name) or {})

    def total(self, name: str) -> float:
        """Sum of a counter over all its label sets."""
        with self._lock:
            return sum(self._counters.get(name, {}).values())

    def render(self) -> str:
        """Prometheus text exposition format 0.0.4."""
        lines: list[str] = []
        with self._lock:
            counters = {k: dict(v) for k, v in self._counters.items()}
            gauges = {k: dict(v) for k, v in self._gauges.items()}
        for kind, table in (("counter", counters), ("gauge", gauges)):
            for name in sorted(table):
                if name in self._help:
                    lines.append(f"# HELP {name} {self._help[name]}")
                lines.append(f"# TYPE {name} {kind}")
                for key, value in sorted(table[name].items()):
                    lab = ",".join(f'{k}="{_escape(v)}"' for k, v in key)
                    lines.append(f"{name}{{{lab}}} {value:g}" if lab else f"{name} {value:g}")
        for name in sorted(self._callbacks):
            try:
                value = float(self._callbacks[name]())
            except Exception:  # a broken gauge must not break the endpoint
                logging.getLogger("kbe.metrics").debug("gauge %s failed", name, exc_info=True)
                continue
            if name in self._help:
                lines.append(f"# HELP {name} {self._help[name]}")
            lines.append(f"# TYPE {name} gauge")
            lines.append(f"{name} {value:g}")
        return "\n".join(lines) + "\n"
