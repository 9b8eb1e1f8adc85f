"""The metrics registry on prometheus_client: counters as counters, latencies as histograms, one prefix."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.metrics import Metrics


def test_kinds_prefix_labels_and_reading_back():
    m = Metrics()
    m.describe("modbus_polls_total", "Polls by result.")
    m.inc("modbus_polls_total", labels={"device": "m1", "result": "ok"})
    m.inc("modbus_polls_total", 2, labels={"device": "m1", "result": "failed"})
    m.set("kbe_sync_in_flight", 3)
    m.observe("modbus_response_seconds", 0.02, labels={"device": "m1"})
    m.observe("modbus_response_seconds", 0.04, labels={"device": "m1"})
    m.gauge_callback("kbe_buffer_depth", lambda: 7)
    m.gauge_callback("kbe_broken", lambda: 1 / 0)
    text = m.render()
    assert "# HELP kbe_modbus_polls_total Polls by result." in text
    assert "# TYPE kbe_modbus_polls_total counter" in text
    assert 'kbe_modbus_polls_total{device="m1",result="failed"} 2.0' in text
    assert "# TYPE kbe_modbus_response_seconds histogram" in text
    assert 'kbe_modbus_response_seconds_bucket{device="m1",le="0.025"} 1.0' in text
    assert "kbe_buffer_depth 7.0" in text
    assert "kbe_broken NaN" in text  # a failing gauge does not break the endpoint
    assert "_created" not in text
    assert all(line.startswith(("#", "kbe_")) for line in text.splitlines())
    assert m.get("modbus_polls_total", {"device": "m1", "result": "failed"}) == 2
    assert m.get("kbe_modbus_polls_total", {"device": "m1", "result": "ok"}) == 1
    assert m.total("modbus_polls_total") == 3
    assert m.get("kbe_sync_in_flight") == 3
    assert abs(m.get("modbus_response_seconds", {"device": "m1"}) - 0.06) < 1e-9
    assert m.get("never_set") == 0


def test_process_and_build_info():
    text = Metrics(process=True, version="1.2.3").render()
    assert 'kbe_build_info{version="1.2.3"} 1.0' in text
    assert "kbe_process_resident_memory_bytes" in text
    assert "python_info" in text


def test_a_metric_used_as_another_kind_is_dropped_not_raised():
    m = Metrics()
    m.inc("kbe_x_total")
    m.set("kbe_x_total", 5)  # a slip in a driver must not stop acquisition
    m.observe("kbe_x_total", 0.1)
    assert m.get("kbe_x_total") == 1


def test_counting_without_rendering_never_loads_prometheus_client() -> None:
    import subprocess
    import sys

    from tests.conftest import agent_env

    code = (
        "import sys\n"
        "from kernel.metrics import Metrics\n"
        "m = Metrics(process=True, version='1')\n"
        "m.inc('a_total', labels={'d': 'x'}); m.set('g', 2); m.observe('s', 0.1); m.gauge_callback('c', lambda: 1)\n"
        "assert m.get('a_total', {'d': 'x'}) == 1 and m.get('c') == 1\n"
        "assert 'prometheus_client' not in sys.modules, 'loaded before /metrics was asked for'\n"
        "assert 'kbe_a_total' in m.render() and 'prometheus_client' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=agent_env(), timeout=60)


def test_the_exposition_is_prometheus_clients_own() -> None:
    """The same operations on prometheus_client's metrics give the same text, line for line."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

    from kernel.metrics import LATENCY_BUCKETS

    m = Metrics()
    reg = CollectorRegistry()
    polls = Counter("kbe_polls", "Polls.", ("device", "result"), registry=reg)
    depth = Gauge("kbe_depth", "kbe depth", registry=reg)
    rtt = Histogram("kbe_rtt_seconds", "kbe rtt seconds", ("device",), registry=reg, buckets=LATENCY_BUCKETS)
    m.describe("polls_total", "Polls.")
    for device, result, n in (("m1", "ok", 3), ("m2", "failed", 1), ("m1", "ok", 2)):
        m.inc("polls_total", n, labels={"result": result, "device": device})
        polls.labels(device, result).inc(n)
    m.set("depth", 4.5)
    depth.set(4.5)
    for value in (0.0005, 0.001, 0.0011, 0.3, 299.0, 301.0):
        m.observe("rtt_seconds", value, labels={"device": "m1"})
        rtt.labels("m1").observe(value)
    assert m.render() == generate_latest(reg).decode()


_label_text = st.text(
    st.one_of(st.sampled_from(['"', "\\", "\n", "a", "é"]), st.characters(blacklist_categories=("Cs",))), max_size=12
)
_number = st.one_of(
    st.floats(allow_nan=False, min_value=0, max_value=1e300),
    st.sampled_from([0.0, 1.0, 0.1, 1e-9, 123456789.0, 1.5e16, float("inf")]),
)


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["counter", "gauge", "histogram"]), st.sampled_from(["a", "b"]), _label_text, _number),
        min_size=1,
        max_size=25,
    ),
    help_text=st.text(st.characters(blacklist_categories=("Cs",)), max_size=20),
)
def test_the_agents_series_are_written_as_generate_latest_writes_them(ops, help_text) -> None:
    """Arbitrary label values (quotes, backslashes, newlines, any script) and numbers: the text the
    agent writes for its own series is generate_latest's, byte for byte, scrape after scrape."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

    from kernel.metrics import LATENCY_BUCKETS

    m = Metrics()
    reg = CollectorRegistry()
    theirs = {
        "counter": Counter("kbe_c", help_text or "kbe c total", ("site", "device"), registry=reg),
        "gauge": Gauge("kbe_g", help_text or "kbe g", ("device",), registry=reg),
        "histogram": Histogram("kbe_h_seconds", help_text or "kbe h seconds", ("device",), registry=reg, buckets=LATENCY_BUCKETS),
    }
    names = {"counter": "c_total", "gauge": "g", "histogram": "h_seconds"}
    for kind in ("counter", "gauge", "histogram"):
        if help_text:
            m.describe(names[kind], help_text)
    first = True
    for kind, site, device, value in ops:
        if kind == "counter":
            labels = {"site": site, "device": device}
            m.inc(names[kind], value, labels=labels)
            theirs[kind].labels(**labels).inc(value)
        elif kind == "gauge":
            m.set(names[kind], value, labels={"device": device})
            theirs[kind].labels(device).set(value)
        else:
            m.observe(names[kind], value, labels={"device": device})
            theirs[kind].labels(device).observe(value)
        if first:  # a scrape in the middle: the kept heads must not go stale
            m.render()
            first = False
    # prometheus_client lists families in registration order; the agent in order of first use
    order = list(dict.fromkeys(kind for kind, *_ in ops))
    expected = "".join(_family_text(generate_latest(reg).decode(), names[k], k) for k in order)
    assert m.render() == expected


def _family_text(text: str, name: str, kind: str) -> str:
    """The HELP/TYPE block and samples of one family from generate_latest's text."""
    shown = "kbe_c_total" if kind == "counter" else f"kbe_{name}"
    lines = [line + "\n" for line in text.split("\n")[:-1]]  # escaped text: only real line ends are \n
    start = next(i for i, line in enumerate(lines) if line.startswith(f"# HELP {shown} "))
    end = next((i for i in range(start + 2, len(lines)) if lines[i].startswith("# HELP")), len(lines))
    return "".join(lines[start:end])
