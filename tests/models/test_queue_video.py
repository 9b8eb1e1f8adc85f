"""Queues a camera can see: a red-light queue on video cut from real photographs stays counted,
stop-line crossings are counted, and the background's learning follows the signal the running
agent commands (through the detector bus)."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
from collections.abc import Callable
from pathlib import Path

import pytest

from control.traffic.card import program_card
from control.traffic.config import DetectorConfig
from control.traffic.source import TrafficSource
from drivers.signals.emulator import ControllerEmulator, DirectLink
from drivers.signals.indications import Indication
from drivers.signals.modbus import ModbusSignalController
from hil.camera_video import ApproachVideo
from kernel.detectors import ApproachSignal
from kernel.sink import ListSink
from kernel.source import RunContext
from models.camera.frames import FrameReader
from models.camera.kind import CameraSource, Config
from models.service import registry_for
from tests.traffic.helpers import junction


def _camera(url: str, truth: dict, **extra: object) -> Config:
    return Config.model_validate(
        {
            "driver": "camera",
            "name": "cam-1",
            "url": url,
            "pace": False,
            "lines": [{"name": "stop_line", "points": truth["line"], "directions": truth["line_directions"]}],
            "zones": [{"name": "approach", "polygon": truth["zone"], "queue_speed": truth["queue_speed"]}],
            **extra,
        }
    )


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The first 60 s red and the green after it, at 640x360 and 5 fps (real photo cut-outs)."""
    from dataclasses import asdict

    video = ApproachVideo(fps=5, seed=3, width=640, height=360, seconds=76)
    path, _ = video.write(tmp_path_factory.mktemp("queue"))
    return path, asdict(video.truth)


def test_the_queue_holds_through_a_60_s_red_and_every_crossing_counts(clip: tuple[Path, dict]) -> None:
    path, truth = clip
    source = CameraSource(_camera(str(path), truth), registry_for(None))
    reader = FrameReader(str(path), pace=False)
    errors, crossings, last = [], 0, None
    try:
        for row in truth["frames"]:
            frame, _ = reader.read()
            if row["signal"] != last:  # as the intersection publishes it
                source.on_detector_event(ApproachSignal("cam-1", "approach", row["signal"] == "red"))
                last = row["signal"]
            state = source.pipeline.process(frame, row["t"]).state
            crossings += len(state.crossings)
            if row["signal"] == "red":
                errors.append(abs(state.queue["approach"] - row["queue"]))
    finally:
        reader.close()
    assert max(r["queue"] for r in truth["frames"]) == 4  # the clip really has the queue
    assert statistics.fmean(errors) <= 0.25, statistics.fmean(errors)
    assert max(errors) <= 1
    assert crossings == truth["frames"][-1]["crossings"] >= 4


def test_another_cameras_signal_is_ignored(clip: tuple[Path, dict]) -> None:
    path, truth = clip
    source = CameraSource(_camera(str(path), truth), registry_for(None))
    gate = source.pipeline.gate
    assert gate is not None
    source.on_detector_event(ApproachSignal("cam-2", "approach", True))
    source.on_detector_event(ApproachSignal("cam-1", "elsewhere", True))
    assert not any(gate._stopped.values())
    source.on_detector_event(ApproachSignal("cam-1", "approach", True))
    assert gate._stopped == {"approach": True}


def test_the_gate_follows_the_signal_the_running_intersection_shows(clip: tuple[Path, dict]) -> None:
    """The intersection and the camera run as the agent runs them, sharing the run context's bus."""
    path, truth = clip
    ix = junction().model_copy(
        update={"detectors": [DetectorConfig(name="zone_ew", group="ew", kind="zone", source="cam-1", input="approach")]}
    )
    emu = ControllerEmulator(program_card(ix), watchdog_s=5.0)
    output = ModbusSignalController(tuple(g.name for g in ix.groups), DirectLink(emu))
    traffic = TrafficSource(ix, "Asia/Ho_Chi_Minh", output=output)
    camera = CameraSource(_camera(str(path), truth, loop=True, pace=True), registry_for(None))
    gate = camera.pipeline.gate
    assert gate is not None
    ctx = RunContext(site=None, sink=ListSink())  # type: ignore[arg-type]

    def shown_green() -> bool:
        return traffic.intersection.envelope.shown()["ew"].is_green

    async def until(pred: Callable[[], bool], timeout: float) -> None:
        end = asyncio.get_running_loop().time() + timeout
        while not pred():
            assert asyncio.get_running_loop().time() < end
            await asyncio.sleep(0.05)

    async def main() -> None:
        tasks = [asyncio.create_task(s.run(ctx)) for s in (traffic, camera)]
        try:
            # The intersection starts flashing (not green): its camera zone stops learning.
            await until(lambda: gate._stopped.get("approach") is True, 10)
            assert not shown_green()
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t

    asyncio.run(main())
    # What the intersection's thread publishes when its group turns green, then red again (the same
    # call its tick makes), reaches the camera through the same bus.
    ctx.detectors.subscribe(camera.on_detector_event)
    traffic.publish = ctx.detectors.publish
    traffic._tell_cameras({"ew": Indication.GREEN, "ns": Indication.RED})
    assert gate._stopped["approach"] is False
    traffic._tell_cameras({"ew": Indication.YELLOW, "ns": Indication.RED})
    assert gate._stopped["approach"] is True
