"""``/metrics`` exposition of :class:`kernel.metrics.Metrics` through ``prometheus_client``.

Imported by the first ``render()`` only: the process and platform collectors, the build info and the
text format are ``prometheus_client``'s; the agent's own series are read from the plain-Python store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.openmetrics.exposition import escape_label_name, escape_metric_name
from prometheus_client.utils import floatToGoString

from kernel.metrics import LATENCY_BUCKETS, PREFIX

if TYPE_CHECKING:
    from kernel.metrics import Metrics

_LE = [floatToGoString(b) for b in (*LATENCY_BUCKETS, float("inf"))]


def _label_value(value: str) -> str:
    """A label value escaped as the text format wants it (backslash, newline, double quote)."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')


class AgentText:
    """The agent's series in the text format ``generate_latest`` writes, without building its objects.

    ``prometheus_client`` makes a metric family object and a sample object per series and formats
    every label set at every scrape: about 200 ms per scrape at 1,400 devices (6 % of the agent's CPU
    when scraped every 10 s). Here each series' name and label text is formatted once, when the series
    first appears, and kept; a scrape writes only the values. The text is byte for byte
    ``generate_latest``'s for the same families (``tests/agent/test_metrics.py`` compares them on
    arbitrary label values and numbers).
    """

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._heads: dict[tuple[str, tuple[str, ...]], tuple[str, ...]] = {}
        self._titles: dict[str, str] = {}

    def render(self) -> str:
        """Every family, in the order of first use."""
        out: list[str] = []
        for family in self.metrics.families():
            title = self._titles.get(family.name)
            kind = family.kind
            if title is None:
                title = self._titles[family.name] = self._title(family.name, family.help, kind)
            out.append(title)
            heads = self._heads
            for key, series in family.items():
                lines = heads.get((family.name, key))
                if lines is None:
                    lines = heads[(family.name, key)] = self._lines(family.name, family.labelnames, key, kind)
                if kind == "histogram":
                    counts, total = series.cumulative()
                    for head, value in zip(lines, (*counts, counts[-1], total), strict=True):
                        out.append(f"{head}{floatToGoString(value)}\n")
                else:
                    out.append(f"{lines[0]}{floatToGoString(series.read())}\n")
        return "".join(out)

    @staticmethod
    def _title(name: str, text: str, kind: str) -> str:
        shown = f"{name.removesuffix('_total')}_total" if kind == "counter" else name
        shown = escape_metric_name(shown)
        doc = text.replace("\\", r"\\").replace("\n", r"\n")
        return f"# HELP {shown} {doc}\n# TYPE {shown} {kind}\n"

    @staticmethod
    def _lines(name: str, labelnames: tuple[str, ...], key: tuple[str, ...], kind: str) -> tuple[str, ...]:
        pairs = list(zip(labelnames, key, strict=True))

        def head(sample: str, labels: list[tuple[str, str]]) -> str:
            text = ",".join(f'{escape_label_name(k)}="{_label_value(v)}"' for k, v in sorted(labels))
            return f"{escape_metric_name(sample)}{{{text}}} " if text else f"{escape_metric_name(sample)} "

        if kind == "counter":
            return (head(f"{name.removesuffix('_total')}_total", pairs),)
        if kind == "gauge":
            return (head(name, pairs),)
        buckets = tuple(head(f"{name}_bucket", [*pairs, ("le", le)]) for le in _LE)
        return (*buckets, head(f"{name}_count", pairs), head(f"{name}_sum", pairs))


def build_registry(metrics: Metrics, process: bool, version: str) -> CollectorRegistry:
    """A registry with the process's own metrics (when ``process``); the agent's follow (:class:`AgentText`)."""
    disable_created_metrics()
    registry = CollectorRegistry(auto_describe=True)
    if process:
        ProcessCollector(namespace=PREFIX.rstrip("_"), registry=registry)
        PlatformCollector(registry=registry)
        Info(f"{PREFIX}build", "Version of the agent.", registry=registry).info({"version": version})
    return registry
