"""Counting on a synthetic road video with known truth: line crossings per direction, zone occupancy."""

from __future__ import annotations

from pathlib import Path

import pytest

from kernel.errors import DeviceTimeout
from models.camera.detectors import MotionBlobDetector
from models.camera.frames import FrameReader
from models.camera.pipeline import CameraPipeline
from models.camera.synthetic import EASTBOUND, WESTBOUND, RoadScene
from models.camera.tracker import Tracker


def _run(scene: RoadScene, frames: list | None = None) -> tuple[dict[str, int], list[tuple[int, int]]]:
    pipeline = CameraPipeline(MotionBlobDetector(), Tracker([scene.line], [scene.zone]))
    counts = {EASTBOUND: 0, WESTBOUND: 0}
    occupancy = []
    source = frames if frames is not None else (scene.frame(i) for i in range(scene.frames))
    for i, frame in enumerate(source):
        result = pipeline.process(frame, i / 25.0)
        for crossing in result.state.crossings:
            counts[crossing.direction] += 1
        occupancy.append((result.state.occupancy[scene.zone.name], scene.true_occupancy(i)))
    return counts, occupancy


@pytest.mark.parametrize("seed", [7, 12])
def test_counts_per_direction_within_one_and_occupancy_per_frame(seed: int) -> None:
    scene = RoadScene(frames=320, seed=seed)
    truth = scene.true_crossings()
    assert truth[EASTBOUND] >= 3
    assert truth[WESTBOUND] >= 3
    counts, occupancy = _run(scene)
    for direction in (EASTBOUND, WESTBOUND):
        assert abs(counts[direction] - truth[direction]) <= 1, (direction, counts, truth)
    exact = sum(1 for got, want in occupancy if got == want)
    assert exact / len(occupancy) >= 0.9
    assert max(abs(got - want) for got, want in occupancy) <= 1
    assert any(want >= 2 for _, want in occupancy)  # the zone does get busy


def test_counts_from_an_mjpeg_video_file(tmp_path: Path) -> None:
    scene = RoadScene(frames=200, seed=11)
    path = scene.write(tmp_path / "road.avi")
    reader = FrameReader(str(path), pace=False)
    frames = []
    while True:
        try:
            frames.append(reader.read()[0])
        except DeviceTimeout:
            break
    reader.close()
    assert len(frames) == scene.frames
    counts, occupancy = _run(scene, frames)
    truth = scene.true_crossings()
    for direction in (EASTBOUND, WESTBOUND):
        assert abs(counts[direction] - truth[direction]) <= 1
    assert sum(1 for got, want in occupancy if got == want) / len(occupancy) >= 0.9


def test_motion_gate_skips_still_frames() -> None:
    scene = RoadScene(frames=60, seed=3)
    pipeline = CameraPipeline(MotionBlobDetector(), Tracker([scene.line], [scene.zone]))
    still = scene.background.copy()
    ran = [pipeline.process(still, i / 25).detector_ran for i in range(30)]
    assert not any(ran)
    assert pipeline.detector_runs == 0
