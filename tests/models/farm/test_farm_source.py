"""The farm kind end to end: config, the history tee, the advisor and the monitor on real models."""

from __future__ import annotations

import asyncio
import datetime as dt
import zoneinfo

import numpy as np
import pytest

from agent.config import parse_config
from kernel.errors import ConfigError
from kernel.readings import Priority, Quality, Reading
from kernel.sink import ListSink
from kernel.source import RunContext
from models.farm.advisor import IrrigationAdvisor, IrrigationPoints
from models.farm.evaluation import load_npz
from models.farm.features import CROPS, FAULT_CLASSES, WINDOW_DAYS, PlotInfo, irrigation_features
from models.farm.history import HistoryTee, ReadingHistory
from models.farm.monitor import SensorFaultMonitor, WatchedSensor
from models.farm.source import FarmSource, build_sources
from tests.models.farm.conftest import TESTDATA, decode

TZ = zoneinfo.ZoneInfo("Asia/Ho_Chi_Minh")
SCALE = {"sm_top": 1000.0, "sm_sub": 1000.0, "tmax": 10.0, "tmin": 10.0, "rh": 10.0, "rain": 10.0}
POINTS = IrrigationPoints(("soil1", "vwc_20"), ("soil1", "vwc_50"), ("ws1", "air_temp"), ("ws1", "rh"),
                          ("ws1", "rain_mm"))


def site(devices: list[dict]) -> dict:
    return {"site": {"id": "farm-test", "name": "Lim farm", "location": {"lat": 21.03, "lon": 106.0}},
            "devices": devices}


FARM = {
    "driver": "farm",
    "name": "plot-1",
    "weather": {"temperature": {"device": "ws1", "point": "air_temp"},
                "humidity": {"device": "ws1", "point": "rh"},
                "rain": {"device": "ws1", "point": "rain_mm"}},
    "irrigation": {"soil_top": {"device": "soil1", "point": "vwc_20"},
                   "soil_sub": {"device": "soil1", "point": "vwc_50"},
                   "field_capacity": 0.33, "wilting_point": 0.13, "crop": "maize", "planting_date": "2026-10-01"},
    "faults": {"sensors": [{"device": "soil1", "point": "vwc_20", "kind": "soil_moisture"},
                           {"device": "ws1", "point": "air_temp", "kind": "temperature"}],
               "period_s": 1},
}


def test_config_accepts_a_farm_device_and_names_bad_fields():
    cfg = parse_config(site([FARM]))
    assert cfg.devices[0].driver == "farm"
    bad = dict(FARM, irrigation=dict(FARM["irrigation"], wilting_point=0.4))
    with pytest.raises(ConfigError) as err:
        parse_config(site([bad]))
    assert any("devices[0].irrigation" in p and "0.4" in p for p in err.value.problems)
    bad = dict(FARM, faults={"sensors": [{"device": "a", "point": "b", "kind": "wind"}]})
    with pytest.raises(ConfigError) as err:
        parse_config(site([bad]))
    assert any("devices[0].faults.sensors[0].kind" in p for p in err.value.problems)
    with pytest.raises(ConfigError, match="irrigation section, a faults section or both"):
        parse_config(site([{k: v for k, v in FARM.items() if k not in ("irrigation", "faults")}]))


# ------------------------------------------------------------------ advisor
def hourly_readings(day: dt.date, sm_top, sm_sub, tmax, tmin, rh, rain) -> list[Reading]:
    """24 hourly readings of one local day whose daily aggregates are exactly the given values."""
    out = []
    midnight = dt.datetime.combine(day, dt.time(0), TZ).timestamp()
    for h in range(24):
        ts = midnight + h * 3600 + 600
        shape = 0.0 if h == 5 else 1.0 if h == 14 else 0.5
        vals = {POINTS.soil_top: sm_top, POINTS.soil_sub: sm_sub, POINTS.temperature: tmin + (tmax - tmin) * shape,
                POINTS.humidity: rh, POINTS.rain: rain if h == 12 else 0.0}
        out += [Reading(k[0], k[1], float(v), ts) for k, v in vals.items() if np.isfinite(v)]
    return out


@pytest.fixture(scope="module")
def irrigation_case():
    """The first held-out season as hourly readings, with the training features of its first days."""
    d = load_npz(TESTDATA / "irrigation_test.npz")
    row = d["plots"][0]
    n = int(d["offsets"][1])
    s = {k: decode(d[k][:n], v) for k, v in SCALE.items()}
    planting = dt.date.fromordinal(int(row[5]))
    plot = PlotInfo(float(row[0]), float(row[1]), CROPS[int(row[2])], float(row[3]), 21.03)
    history = ReadingHistory([POINTS.soil_top, POINTS.soil_sub, POINTS.temperature, POINTS.humidity, POINTS.rain])
    for i in range(n):
        history.add(hourly_readings(planting + dt.timedelta(days=i), *(s[k][i] for k in SCALE)))
    return {"history": history, "plot": plot, "planting": planting, "features": d["features_head"],
            "labels": d["labels"], "n": n}


def test_advisor_features_from_hourly_readings_equal_training_features(registry, irrigation_case):
    c = irrigation_case
    adv = IrrigationAdvisor("plot-1", registry.handle("irrigation_need"), c["plot"], c["planting"], POINTS)
    for t in (WINDOW_DAYS - 1, 20, 45, 90):
        now = dt.datetime.combine(c["planting"] + dt.timedelta(days=t + 1), dt.time(6), TZ).timestamp()
        inp = adv.inputs(c["history"], now)
        x = irrigation_features(inp.sm_top, inp.sm_sub, inp.tmax, inp.tmin, inp.rh, inp.rain, inp.doy,
                                inp.days_after_planting, c["plot"])
        np.testing.assert_allclose(x, c["features"][t - (WINDOW_DAYS - 1)], rtol=0, atol=1e-5)


def test_advisor_alerts_when_the_model_says_so(registry, irrigation_case):
    c = irrigation_case
    model = registry.get("irrigation_need")
    thr = model.manifest.params["threshold"]
    adv = IrrigationAdvisor("plot-1", registry.handle("irrigation_need"), c["plot"], c["planting"], POINTS,
                            alert_priority=Priority.ALARM)
    seen = set()
    for t in range(WINDOW_DAYS - 1, c["n"] - 2):
        now = dt.datetime.combine(c["planting"] + dt.timedelta(days=t + 1), dt.time(6), TZ).timestamp()
        prob, alert = adv.assess(c["history"], now)
        assert prob.point == "irrigation_need_48h"
        assert prob.meta["model"] == "irrigation_need"
        assert prob.meta["model_version"] == model.version
        assert alert.value is (prob.value >= thr)
        assert alert.priority == (Priority.ALARM if alert.value else Priority.TELEMETRY)
        seen.add(bool(alert.value))
        if alert.value:
            assert "irrigation within 48 h" in alert.meta["text"]
    assert seen == {True, False}


def test_advisor_without_soil_data_never_alerts(registry, irrigation_case):
    c = irrigation_case
    adv = IrrigationAdvisor("plot-1", registry.handle("irrigation_need"), c["plot"], c["planting"], POINTS)
    late = dt.datetime.combine(c["planting"] + dt.timedelta(days=c["n"] + 30), dt.time(6), TZ).timestamp()
    prob, alert = adv.assess(c["history"], late)
    assert prob.quality == Quality.BAD
    assert alert.value is False
    suspect = adv.assess(c["history"], late - 30 * 86400 - 5 * 86400, {POINTS.soil_top})[0]
    assert suspect.quality == Quality.UNCERTAIN
    assert "flagged faulty" in suspect.meta["note"]


# ------------------------------------------------------------------ fault monitor
def feed(history: ReadingHistory, key, values: np.ndarray, end: float) -> None:
    for i, v in enumerate(values):
        if np.isfinite(v):
            history.add([Reading(key[0], key[1], float(v), end - (len(values) - i) * 3600 + 1800)])


def test_monitor_raises_and_clears_fault_alarms(registry):
    d = load_npz(TESTDATA / "fault_test.npz")
    model = registry.get("sensor_fault")
    sm = [i for i in range(len(d["label"])) if d["kind"][i] == 0]
    stuck = next(i for i in sm if FAULT_CLASSES[d["label"][i]] == "stuck")
    normal = next(i for i in sm if FAULT_CLASSES[d["label"][i]] == "normal")
    end = 1_800_000_000.0
    history = ReadingHistory([("soil1", "vwc_20"), ("ws1", "rain_mm")])
    mon = SensorFaultMonitor("plot-1", registry.handle("sensor_fault"), [WatchedSensor("soil1", "vwc_20", "soil_moisture")],
                             ("ws1", "rain_mm"), min_confidence=0.5)
    feed(history, ("soil1", "vwc_20"), decode(d["readings"][stuck], 1000.0), end)
    feed(history, ("ws1", "rain_mm"), decode(d["rain"][stuck], 10.0), end)
    (r,) = mon.check(history, end + 10)
    assert r.value == "stuck"
    assert r.priority == Priority.ALARM
    assert r.point == "fault.soil1.vwc_20"
    assert r.meta["model"] == "sensor_fault"
    assert r.meta["model_version"] == model.version
    assert mon.suspect == {("soil1", "vwc_20")}
    (r,) = mon.check(history, end + 20)
    assert r.priority == Priority.TELEMETRY  # still stuck: no second alarm
    later = end + 100 * 3600
    feed(history, ("soil1", "vwc_20"), decode(d["readings"][normal], 1000.0), later)
    feed(history, ("ws1", "rain_mm"), decode(d["rain"][normal], 10.0), later)
    (r,) = mon.check(history, later + 10)
    assert r.value == "normal"
    assert r.priority == Priority.EVENT
    assert mon.suspect == set()
    (r,) = mon.check(history, later + 200 * 3600)  # silence for days: the sensor dropped out
    assert r.value == "dropout"
    assert r.priority == Priority.ALARM


def test_build_sources_tees_the_site_sink_and_ticks(registry):
    cfg = parse_config(site([FARM]))
    sink = ListSink()
    ctx = RunContext(cfg, sink)
    (source,) = build_sources(cfg.devices, ctx)
    assert isinstance(ctx.sink, HistoryTee)
    assert isinstance(source, FarmSource)
    now = ctx.clock.now()
    d = load_npz(TESTDATA / "fault_test.npz")
    normal = [i for i in range(len(d["label"])) if d["kind"][i] == 1 and d["label"][i] == 0]
    temps = np.concatenate([decode(d["readings"][i], 10.0) for i in normal[:2]])[-80:]
    assert np.isfinite(temps).all()
    readings = [Reading("ws1", "air_temp", float(v), now - (80 - i) * 3600) for i, v in enumerate(temps)]
    readings.append(Reading("other", "ignored", 1.0, now))
    asyncio.run(ctx.sink.put(readings))
    assert sink.readings == readings  # forwarded unchanged
    assert len(ctx.sink.history.series("ws1", "air_temp", 0, now + 1)[0]) == 80
    assert ctx.sink.history.series("other", "ignored", 0, now + 1)[0].size == 0

    async def run_briefly() -> None:
        task = asyncio.create_task(source.run(ctx))
        await asyncio.sleep(2.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run_briefly())
    faults = [r for r in sink.readings if r.device == "plot-1"]
    by_point = {r.point: r for r in faults}
    assert set(by_point) == {"fault.soil1.vwc_20", "fault.ws1.air_temp"}
    assert by_point["fault.soil1.vwc_20"].value == "dropout"  # never reported
    assert by_point["fault.ws1.air_temp"].value == "normal"
    assert not [r for r in faults if r.point.startswith("irrigation")]  # its period is a day


def test_point_scale_converts_percent_to_model_units_and_conflicts_are_refused():
    cfg = parse_config(site([dict(FARM, irrigation=dict(FARM["irrigation"],
                                                        soil_top={"device": "soil1", "point": "vwc_20", "scale": 0.01}),
                                  faults={"sensors": [{"device": "soil1", "point": "vwc_20", "scale": 0.01,
                                                       "kind": "soil_moisture"}]})]))
    ctx = RunContext(cfg, ListSink())
    (source,) = build_sources(cfg.devices, ctx)
    asyncio.run(ctx.sink.put([Reading("soil1", "vwc_20", 31.5, 100.0)]))
    _, vals = source.reader.series("soil1", "vwc_20", 0, 200)
    assert vals.tolist() == [pytest.approx(0.315)]
    conflict = dict(FARM, faults={"sensors": [{"device": "soil1", "point": "vwc_20", "scale": 0.01,
                                               "kind": "soil_moisture"}]})
    with pytest.raises(ConfigError, match="two different scales"):
        parse_config(site([conflict]))


def test_history_keeps_one_reading_a_minute_and_bad_quality_as_missing():
    h = ReadingHistory([("d", "p")], max_per_point=5, min_interval_s=60)
    h.add([Reading("d", "p", float(i), 1000.0 + 10 * i) for i in range(12)])  # every 10 s for 2 min
    h.add([Reading("d", "p", 7.0, 1200.0, quality=Quality.BAD), Reading("d", "p", "text", 1300.0)])
    ts, vals = h.series("d", "p", 0, 2000)
    assert ts.tolist() == [1000.0, 1060.0, 1200.0, 1300.0]
    assert vals[:2].tolist() == [0.0, 6.0]
    assert np.isnan(vals[2:]).all()


def test_replaced_model_is_picked_up_and_a_corrupt_one_is_refused(tmp_path, caplog):
    import shutil

    from models.farm.source import MODEL_DIR

    for name in ("sensor_fault.tflite", "sensor_fault.yaml", "irrigation_need.tflite", "irrigation_need.yaml"):
        shutil.copy(MODEL_DIR / name, tmp_path / name)
    cfg = parse_config(site([dict(FARM, model_dir=str(tmp_path))]))
    ctx = RunContext(cfg, ListSink())
    (source,) = build_sources(cfg.devices, ctx)
    first = source.tick(ctx, True, False)
    assert {r.meta["model_version"] for r in first} == {"1.1.0"}
    manifest = tmp_path / "sensor_fault.yaml"
    manifest.write_text(manifest.read_text().replace("version: 1.1.0", "version: 1.1.1"))
    assert {r.meta["model_version"] for r in source.tick(ctx, True, False)} == {"1.1.1"}
    model = tmp_path / "sensor_fault.tflite"
    model.write_bytes(model.read_bytes()[:-100])  # truncated: the hash no longer matches
    with caplog.at_level("ERROR"):
        after = source.tick(ctx, True, False)
    assert {r.meta["model_version"] for r in after} == {"1.1.1"}  # the previous model keeps running
    assert "refused" in caplog.text


def test_cumulative_rain_counter_becomes_hourly_amounts():
    from models.farm.history import ScaledSeries, hourly

    h = ReadingHistory([("ws1", "rain_total")], min_interval_s=0)
    totals = [10.0, 10.0, 10.4, 11.0, 11.0, 0.2, 0.6]  # the counter resets after the fifth hour
    h.add([Reading("ws1", "rain_total", v, 3600.0 * i + 1800) for i, v in enumerate(totals)])
    reader = ScaledSeries(h, {}, {("ws1", "rain_total")})
    ts, vals = reader.series("ws1", "rain_total", 3600.0, 7 * 3600.0)
    np.testing.assert_allclose(vals, [0.0, 0.4, 0.6, 0.0, 0.2, 0.4])
    np.testing.assert_allclose(hourly(ts, vals, 7 * 3600.0, 6, "sum"), [0.0, 0.4, 0.6, 0.0, 0.2, 0.4])
    cfg = parse_config(site([dict(FARM, weather=dict(FARM["weather"], rain={"device": "ws1", "point": "rain_total",
                                                                           "cumulative": True}))]))
    ctx = RunContext(cfg, ListSink())
    (source,) = build_sources(cfg.devices, ctx)
    assert source.reader.cumulative == {("ws1", "rain_total")}


def test_farm_device_in_the_real_agent_sees_other_devices_and_stores_its_verdicts(tmp_path):
    """The agent's own runtime: the tee sits in front of the store writer; verdicts land in SQLite."""
    from agent.app import Agent
    from sync.store import Store

    cfg = parse_config({
        "site": {"id": "bn-farm-01", "name": "Farm", "location": {"lat": 21.18, "lon": 106.07}},
        "devices": [
            {"driver": "system", "name": "board", "period_s": 1},
            {"driver": "farm", "name": "plot-1", "weather": FARM["weather"],
             "faults": {"period_s": 1, "sensors": [{"device": "board", "point": "load1", "kind": "temperature"}]}},
        ],
        "store": {"path": str(tmp_path / "store.db"), "commit_interval_s": 0.02},
        "health": {"listen": None},
    })

    async def run() -> FarmSource:
        agent = Agent(cfg)
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        await asyncio.sleep(3.0)
        stop.set()
        await asyncio.wait_for(task, 20)
        (farm,) = [s for s in agent.sources if isinstance(s, FarmSource)]
        return farm

    farm = asyncio.run(run())
    ts, _ = farm.history.series("board", "load1", 0, 4e9)
    assert len(ts) >= 1  # the board's readings reached the farm history through the tee
    with Store(tmp_path / "store.db", "bn-farm-01") as store:
        rows = [s.reading for s in store.pending(10_000)]
    verdicts = [r for r in rows if r.device == "plot-1"]
    assert verdicts
    assert {r.point for r in verdicts} == {"fault.board.load1"}
    assert verdicts[0].value == "dropout"  # two or three readings in 72 hours
    assert verdicts[0].priority == Priority.ALARM
    assert verdicts[0].meta["model"] == "sensor_fault"
    assert {r.point for r in rows if r.device == "board"} >= {"load1"}  # and they still reach the store
