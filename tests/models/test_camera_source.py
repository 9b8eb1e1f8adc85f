"""The camera device kind end to end: config, file stream, readings in the sink, listeners, snapshots."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.config import parse_config
from kernel.detectors import DetectorBus, DetectorEvent, ZoneCount
from kernel.errors import ConfigError, DeviceTimeout
from kernel.readings import Priority
from kernel.sink import ListSink
from kernel.source import RunContext
from models.camera.kind import CameraSource, Config, build_sources
from models.camera.synthetic import EASTBOUND, WESTBOUND, RoadScene
from models.service import registry_for

SITE = {"id": "test-site", "name": "Test", "location": {"lat": 21.18, "lon": 106.07}}


def _camera(url: str, **extra: object) -> dict:
    return {
        "driver": "camera",
        "name": "cam-1",
        "url": url,
        "pace": False,
        "lines": [
            {"name": "centre", "points": [[0.5, 0.1], [0.5, 0.95]], "directions": [EASTBOUND, WESTBOUND]}
        ],
        "zones": [{"name": "approach", "polygon": [[0.6, 0.2], [0.95, 0.2], [0.95, 0.85], [0.6, 0.85]]}],
        "report_interval_s": 2.0,
        "listener_interval_s": 0.5,
        **extra,
    }


class Recorder:
    def __init__(self) -> None:
        self.zones: list[ZoneCount] = []

    def __call__(self, event: DetectorEvent) -> None:
        assert isinstance(event, ZoneCount)
        self.zones.append(event)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RoadScene]:
    scene = RoadScene(frames=250, seed=7)
    return scene.write(tmp_path_factory.mktemp("cam") / "road.avi"), scene


def _run(source: CameraSource, site_cfg: object, bus: DetectorBus | None = None) -> ListSink:
    sink = ListSink()
    ctx = RunContext(site=site_cfg, sink=sink, detectors=bus or DetectorBus())  # type: ignore[arg-type]
    with pytest.raises(DeviceTimeout):  # the file ends: the supervisor would restart the source
        asyncio.run(source.run(ctx))
    return sink


def test_file_camera_puts_counts_in_the_sink_and_tells_listeners(
    video: tuple[Path, RoadScene], tmp_path: Path
) -> None:
    path, scene = video
    site = parse_config({"site": SITE, "devices": [_camera(str(path), snapshot_dir=str(tmp_path / "snaps"))]})
    cam_cfg = site.devices[0]
    assert isinstance(cam_cfg, Config)
    bus = DetectorBus()
    recorder = Recorder()
    bus.subscribe(recorder)
    source = CameraSource(cam_cfg, registry_for(site.inference))
    sink = _run(source, site, bus)

    readings = sink.readings
    assert readings
    for r in readings:
        assert r.device == "cam-1"
        assert isinstance(r.value, int | float)  # numbers only: no pixels leave the pipeline
        assert r.meta is not None
        assert r.meta["model"] == "motion-blob"
        assert "model_version" in r.meta
    crossings = {
        d: sum(r.value for r in readings if r.point == f"line.centre.{d}")  # type: ignore[misc]
        for d in (EASTBOUND, WESTBOUND)
    }
    truth = scene.true_crossings()
    for d in (EASTBOUND, WESTBOUND):
        assert crossings[d] <= truth[d] + 1
    assert {"zone.approach.occupancy", "zone.approach.queue", "frames"} <= {r.point for r in readings}
    # The zone goes to the detector bus every listener interval (0.5 s), far more often than the
    # store's reports (2 s), and it is the same occupancy the store sees.
    reports = [r for r in readings if r.point == "zone.approach.occupancy"]
    assert {(z.source, z.zone) for z in recorder.zones} == {("cam-1", "approach")}
    assert len(recorder.zones) >= 3 * len(reports)
    assert max(z.count for z in recorder.zones) >= max(r.value for r in readings if r.point == "zone.approach.occupancy_max") - 1  # type: ignore[operator]
    assert max(z.count for z in recorder.zones) > 0
    assert all(0 <= z.halting <= z.count for z in recorder.zones)
    assert not (tmp_path / "snaps").exists()  # no snapshot unless requested


def test_snapshot_only_on_request(video: tuple[Path, RoadScene], tmp_path: Path) -> None:
    path, _ = video
    site = parse_config({"site": SITE, "devices": [_camera(str(path), snapshot_dir=str(tmp_path / "snaps"))]})
    source = CameraSource(site.devices[0], registry_for(site.inference))  # type: ignore[arg-type]
    sink = ListSink()

    async def main() -> Path:
        task = asyncio.create_task(source.run(RunContext(site=site, sink=sink)))
        await asyncio.sleep(0)
        snap = await asyncio.wait_for(source.request_snapshot(), 30)
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, DeviceTimeout):
            pass
        return snap

    snap = asyncio.run(main())
    assert snap.is_file()
    assert snap.suffix == ".jpg"
    assert list((tmp_path / "snaps").iterdir()) == [snap]
    events = [r for r in sink.readings if r.point == "snapshot"]
    assert len(events) == 1
    assert events[0].priority == Priority.EVENT
    assert events[0].value == str(snap)


def test_snapshot_refused_without_snapshot_dir(video: tuple[Path, RoadScene]) -> None:
    path, _ = video
    site = parse_config({"site": SITE, "devices": [_camera(str(path))]})
    source = CameraSource(site.devices[0], registry_for(site.inference))  # type: ignore[arg-type]

    async def ask() -> None:
        source.request_snapshot()

    with pytest.raises(PermissionError, match="snapshots are disabled"):
        asyncio.run(ask())


def test_build_sources_with_a_blaze_detector_and_disabled_camera(video: tuple[Path, RoadScene]) -> None:
    path, _ = video
    cams = [
        _camera(str(path), detector={"kind": "blaze", "model": "pose_detection"}),
        {**_camera(str(path)), "name": "cam-2", "enabled": False},
    ]
    site = parse_config({"site": SITE, "devices": cams, "inference": {"num_threads": 1}})
    sources = build_sources(
        [d for d in site.devices if isinstance(d, Config)], RunContext(site=site, sink=ListSink())
    )
    assert [s.name for s in sources] == ["cam-1"]
    assert sources[0].pipeline.detector.meta() == {"model": "pose_detection", "model_version": "0.10.21"}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lines": [{"name": "l", "points": [[0.5, 0.1], [1.5, 0.9]]}]}, "devices[0].lines[0].points"),
        ({"detector": {"kind": "ssd"}}, "devices[0].detector"),
        ({"url": "ftp://cam/x"}, "devices[0].url"),
        ({"zones": [{"name": "z", "polygon": [[0.1, 0.1], [0.2, 0.2]]}]}, "devices[0].zones[0].polygon"),
    ],
)
def test_bad_camera_config_names_the_field(change: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"site": SITE, "devices": [{**_camera("/tmp/x.avi"), **change}]})
    assert message in str(err.value)


def test_model_updates_while_running_are_reported(video: tuple[Path, RoadScene], tmp_path: Path) -> None:
    """A camera's periodic reload: a good update is announced, a bad one refused as an EVENT."""
    import shutil

    import yaml

    from models.registry import ModelRegistry

    files = Path(__file__).resolve().parents[2] / "models" / "files"
    for suffix in (".tflite", ".yaml"):
        shutil.copyfile(files / f"tiny_ssd{suffix}", tmp_path / f"tiny_ssd{suffix}")
    path, _ = video
    site = parse_config(
        {"site": SITE, "devices": [_camera(str(path), detector={"kind": "ssd", "model": "tiny_ssd"})]}
    )
    source = CameraSource(site.devices[0], ModelRegistry(tmp_path, num_threads=1))  # type: ignore[arg-type]
    sink = ListSink()
    ctx = RunContext(site=site, sink=sink)
    manifest = tmp_path / "tiny_ssd.yaml"

    data = yaml.safe_load(manifest.read_text())
    manifest.write_text(yaml.safe_dump({**data, "version": "1.1.0"}))
    asyncio.run(source._reload(ctx))
    assert [(r.point, r.value) for r in sink.readings] == [("model.tiny_ssd.loaded", "1.1.0")]
    assert source.pipeline.detector.meta()["model_version"] == "1.1.0"

    manifest.write_text(yaml.safe_dump({**data, "version": "2.0.0", "sha256": "a" * 64}))
    asyncio.run(source._reload(ctx))
    refused = sink.readings[-1]
    assert refused.point == "model.tiny_ssd.refused"
    assert refused.priority == Priority.EVENT
    assert "sha256" in str(refused.value)
    assert source.pipeline.detector.meta()["model_version"] == "1.1.0"  # the running model stays
