"""``/metrics`` exposition of :class:`kernel.metrics.Metrics` through ``prometheus_client``.

Imported by the first ``render()`` only: the process and platform collectors, the build info and the
text format are ``prometheus_client``'s; the agent's own series are read from the plain-Python store.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from kernel.metrics import LATENCY_BUCKETS, PREFIX

if TYPE_CHECKING:
    from kernel.metrics import Metrics

_LE = [floatToGoString(b) for b in (*LATENCY_BUCKETS, float("inf"))]


class _AgentCollector(Collector):
    """Yields the agent's metrics as metric families, in the order of their first use."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # the names grow after registration: nothing to check them against

    def collect(self) -> Iterator[Metric]:
        for family in self.metrics.families():
            names = list(family.labelnames)
            if family.kind == "counter":
                counter = CounterMetricFamily(family.name.removesuffix("_total"), family.help, labels=names)
                for key, series in family.items():
                    counter.add_metric(list(key), series.read())
                yield counter
            elif family.kind == "gauge":
                gauge = GaugeMetricFamily(family.name, family.help, labels=names)
                for key, series in family.items():
                    gauge.add_metric(list(key), series.read())
                yield gauge
            else:
                histogram = HistogramMetricFamily(family.name, family.help, labels=names)
                for key, series in family.items():
                    counts, total = series.cumulative()
                    histogram.add_metric(list(key), list(zip(_LE, counts, strict=True)), total)
                yield histogram


def build_registry(metrics: Metrics, process: bool, version: str) -> CollectorRegistry:
    """A registry with the process's own metrics (when ``process``) and then the agent's."""
    disable_created_metrics()
    registry = CollectorRegistry(auto_describe=True)
    if process:
        ProcessCollector(namespace=PREFIX.rstrip("_"), registry=registry)
        PlatformCollector(registry=registry)
        Info(f"{PREFIX}build", "Version of the agent.", registry=registry).info({"version": version})
    registry.register(_AgentCollector(metrics))
    return registry
