"""Device kind ``camera``: one source per camera, from frames to counts in the store.

Config example (coordinates are fractions of the frame, so they survive a resolution change)::

    - driver: camera
      name: cam-ly-thai-to-n
      url: rtsp://viewer:secret@10.0.3.21:554/stream2
      detector: {kind: motion}
      lines:
        - {name: stop_line, points: [[0.1, 0.62], [0.9, 0.62]], directions: [inbound, outbound]}
      zones:
        - {name: approach, polygon: [[0.2, 0.4], [0.8, 0.4], [0.95, 0.95], [0.05, 0.95]]}
      report_interval_s: 60

Frames stay in this process: the store and the traffic controller get numbers only. An image is
written only when :meth:`CameraSource.request_snapshot` is called, and only to ``snapshot_dir``
on the device.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import Field, field_validator, model_validator

from kernel.config_base import RelPath, StrictModel
from kernel.detectors import ApproachSignal, DetectorEvent, ZoneCount
from kernel.errors import ModelError
from kernel.readings import Priority, Reading
from kernel.source import RunContext, Source
from models.camera.counts import CameraCounts, CountsAccumulator
from models.camera.detectors import BlazeDetector, Detector, MotionBlobDetector, SsdDetector
from models.camera.frames import FrameReader, parse_url, redact
from models.camera.motion import MotionGate
from models.camera.pipeline import CameraPipeline, FrameResult
from models.camera.tracker import CountLine, Tracker, Zone
from models.registry import ModelRegistry
from models.service import ModelRegistries

log = logging.getLogger("kbe.camera")
Point = tuple[float, float]
NAME = r"^[a-z0-9][a-z0-9_-]{0,31}$"


def _unit_points(points: Sequence[Point]) -> None:
    for x, y in points:
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise ValueError(f"point ({x}, {y}) is outside the frame (coordinates are fractions, 0..1)")


class LineConfig(StrictModel):
    """A counting line; crossing it is counted once per tracked object, per direction."""

    name: str = Field(pattern=NAME)
    points: tuple[Point, Point]
    directions: tuple[str, str] = Field(
        default=("forward", "backward"),
        description="Names for crossing from the right of a->b to its left, and back (y pointing down).",
    )

    @field_validator("points")
    @classmethod
    def _in_frame(cls, value: tuple[Point, Point]) -> tuple[Point, Point]:
        _unit_points(value)
        return value


class ZoneConfig(StrictModel):
    """A polygon zone: occupancy is the tracks inside; queue is those slower than ``queue_speed``."""

    name: str = Field(pattern=NAME)
    polygon: list[Point] = Field(min_length=3)
    queue_speed: float = Field(default=0.02, gt=0, description="Frame widths per second.")

    @field_validator("polygon")
    @classmethod
    def _in_frame(cls, value: list[Point]) -> list[Point]:
        _unit_points(value)
        return value


class DetectorConfig(StrictModel):
    """Which detector: motion blobs (no model), an SSD-style .tflite, or a MediaPipe blaze model."""

    kind: Literal["motion", "ssd", "blaze"] = "motion"
    model: str | None = Field(default=None, description="Model name in the registry (ssd and blaze).")
    min_score: float | None = Field(default=None, gt=0, lt=1)
    labels: list[str] | None = Field(default=None, description="Keep only these labels.")
    min_area: float = Field(
        default=0.0015, ge=0, lt=1, description="Smallest motion blob, fraction of frame."
    )

    @model_validator(mode="after")
    def _model_named(self) -> DetectorConfig:
        if self.kind != "motion" and not self.model:
            raise ValueError(f"model: a {self.kind} detector needs the name of a model")
        return self


class GateConfig(StrictModel):
    """Motion gating: run model detectors only when and where something moves."""

    enabled: bool = True
    work_width: int = Field(default=320, ge=64, le=1920)
    learning_rate: float = Field(default=0.002, gt=0, lt=1)
    var_threshold: float = Field(default=25.0, gt=0)


class TrackerConfig(StrictModel):
    """Tracker tuning."""

    iou_min: float = Field(default=0.1, ge=0, le=1)
    max_distance: float = Field(default=0.08, gt=0, le=1, description="Fraction of the frame diagonal.")
    max_missed_s: float = Field(default=0.5, gt=0, le=60)
    anchor: Literal["centre", "bottom"] = "centre"


class Config(StrictModel):
    """A camera counting road users on lines and in zones."""

    driver: Literal["camera"]
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")
    enabled: bool = True
    url: str = Field(description="rtsp://, http:// (MJPEG), v4l2:///dev/videoN or a video file path.")
    transport: Literal["tcp", "udp"] = "tcp"
    loop: bool = Field(default=False, description="Replay a video file forever (demos and HIL).")
    pace: bool = Field(default=True, description="Replay a video file at its own frame rate.")
    detector: DetectorConfig = DetectorConfig()
    gate: GateConfig = GateConfig()
    tracker: TrackerConfig = TrackerConfig()
    lines: list[LineConfig] = Field(default_factory=list)
    zones: list[ZoneConfig] = Field(default_factory=list)
    max_fps: float | None = Field(
        default=None, gt=0, le=120, description="Process at most this many frames/s."
    )
    report_interval_s: float = Field(default=60.0, ge=1, le=3600, description="Counts into the store.")
    listener_interval_s: float = Field(
        default=1.0, gt=0, le=60, description="Counts to the traffic controller."
    )
    snapshot_dir: RelPath | None = Field(
        default=None, description="Where requested snapshots go; none: refused."
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parse_url(value)
        return value

    @model_validator(mode="after")
    def _unique(self) -> Config:
        for what, names in (("lines", [x.name for x in self.lines]), ("zones", [z.name for z in self.zones])):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{what}: names {dupes} are used more than once")
        return self


def build_detector(cfg: DetectorConfig, registry: ModelRegistry) -> Detector:
    """The detector a camera config asks for; :class:`ModelError` if its model is refused."""
    if cfg.kind == "motion":
        return MotionBlobDetector(min_area=cfg.min_area)
    assert cfg.model is not None
    handle = registry.handle(cfg.model)
    if cfg.kind == "ssd":
        return SsdDetector(handle, min_score=cfg.min_score, labels=cfg.labels)
    return BlazeDetector(handle, min_score=cfg.min_score, labels=cfg.labels)


def build_pipeline(cfg: Config, registry: ModelRegistry) -> CameraPipeline:
    """Detector, motion gate and tracker for one camera."""
    detector = build_detector(cfg.detector, registry)
    gate = None
    if cfg.gate.enabled or detector.needs_motion:
        gate = MotionGate(
            work_width=cfg.gate.work_width,
            min_area=cfg.detector.min_area,
            learning_rate=cfg.gate.learning_rate,
            var_threshold=cfg.gate.var_threshold,
        )
        for z in cfg.zones:
            gate.watch(z.name, tuple(z.polygon))
    lines = [CountLine(x.name, x.points[0], x.points[1], x.directions) for x in cfg.lines]
    zones = [Zone(z.name, tuple(z.polygon), z.queue_speed) for z in cfg.zones]
    tracker = Tracker(
        lines,
        zones,
        iou_min=cfg.tracker.iou_min,
        max_distance=cfg.tracker.max_distance,
        max_missed_s=cfg.tracker.max_missed_s,
        anchor=cfg.tracker.anchor,
    )
    return CameraPipeline(detector, tracker, gate)


class CameraSource:
    """Reads one camera, runs its pipeline, reports counts to the sink and zones to the detector bus."""

    def __init__(self, cfg: Config, registry: ModelRegistry, reload_check_s: float = 30.0) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.registry = registry
        self.reload_check_s = reload_check_s
        self.pipeline = build_pipeline(cfg, registry)
        self._snapshot: asyncio.Future[Path] | None = None
        lines = {x.name: x.directions for x in cfg.lines}
        zones = [z.name for z in cfg.zones]
        now = time.time()
        self._store_acc = CountsAccumulator(cfg.name, lines, zones, now)
        self._listen_acc = CountsAccumulator(cfg.name, lines, zones, now)

    def on_detector_event(self, event: DetectorEvent) -> None:
        """The detector bus: the signal an intersection shows this camera's zone pauses its learning."""
        gate = self.pipeline.gate
        if isinstance(event, ApproachSignal) and event.source == self.name and gate is not None:
            gate.set_stop(event.zone, event.stop)

    def request_snapshot(self) -> asyncio.Future[Path]:
        """Ask for the next frame as a JPEG in ``snapshot_dir`` (the one way an image is written)."""
        if self.cfg.snapshot_dir is None:
            raise PermissionError(f"camera {self.name}: snapshots are disabled (no snapshot_dir)")
        if self._snapshot is None or self._snapshot.done():
            self._snapshot = asyncio.get_running_loop().create_future()
        return self._snapshot

    def _save_snapshot(self, frame: np.ndarray, ts: float) -> Path:
        assert self.cfg.snapshot_dir is not None
        self.cfg.snapshot_dir.mkdir(parents=True, exist_ok=True)
        path = self.cfg.snapshot_dir / f"{self.name}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime(ts))}.jpg"
        if not cv2.imwrite(str(path), frame):
            raise OSError(f"cannot write {path}")
        return path

    def _step(
        self, reader: FrameReader, min_gap: float, last: float
    ) -> tuple[FrameResult, np.ndarray, float] | None:
        frame, ts = reader.read()
        if min_gap and ts - last < min_gap:
            return None
        return self.pipeline.process(frame, ts), frame, ts

    async def run(self, ctx: RunContext) -> None:
        """Read and count until cancelled; a dead stream raises so the supervisor restarts us.

        Reading and processing run on one worker thread per camera; closing the capture is queued
        on the same thread, so a cancelled run never releases a capture mid-read.
        """
        loop = asyncio.get_running_loop()
        worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"camera-{self.name}")
        try:
            reader = await loop.run_in_executor(
                worker, FrameReader, self.cfg.url, self.cfg.loop, self.cfg.pace, self.cfg.transport
            )
        except BaseException:
            worker.shutdown(wait=False)
            raise
        ctx.detectors.subscribe(self.on_detector_event)
        try:
            await self._loop(ctx, worker, reader)
        finally:
            ctx.detectors.unsubscribe(self.on_detector_event)
            closing = loop.run_in_executor(worker, reader.close)
            worker.shutdown(wait=False)
            await asyncio.shield(closing)

    async def _loop(self, ctx: RunContext, worker: ThreadPoolExecutor, reader: FrameReader) -> None:
        loop = asyncio.get_running_loop()
        ctx.log.info("camera %s: reading %s (%s)", self.name, redact(self.cfg.url), self.cfg.detector.kind)
        min_gap = 1.0 / self.cfg.max_fps if self.cfg.max_fps else 0.0
        last_ts = -math.inf
        next_reload = time.monotonic() + self.reload_check_s
        labels = {"camera": self.name}
        while True:
            step = await loop.run_in_executor(worker, self._step, reader, min_gap, last_ts)
            if step is None:
                continue
            result, frame, ts = step
            last_ts = ts
            self._store_acc.add(result.state, result.detector_ran)
            self._listen_acc.add(result.state, result.detector_ran)
            ctx.metrics.inc("kbe_camera_frames_total", labels=labels)
            ctx.metrics.inc("kbe_camera_detector_runs_total", float(result.detector_ran), labels=labels)
            if self._snapshot is not None and not self._snapshot.done():
                await self._take_snapshot(ctx, frame, ts)
            meta = {**self.pipeline.detector.meta(), "detector": self.pipeline.detector.kind}
            if ts - self._listen_acc.start >= self.cfg.listener_interval_s:
                self._publish_zones(ctx, self._listen_acc.take(ts, meta))
            if ts - self._store_acc.start >= self.cfg.report_interval_s:
                await ctx.sink.put(self._store_acc.take(ts, meta).readings(ctx.clock.quality()))
            if self.reload_check_s and time.monotonic() >= next_reload:
                next_reload = time.monotonic() + self.reload_check_s
                await self._reload(ctx)

    def _publish_zones(self, ctx: RunContext, counts: CameraCounts) -> None:
        """Each zone's vehicles and queue in the last frame, to the traffic controller."""
        for zone in counts.occupancy:
            ctx.detectors.publish(ZoneCount(self.name, zone, counts.occupancy[zone], counts.queue[zone]))

    async def _take_snapshot(self, ctx: RunContext, frame: np.ndarray, ts: float) -> None:
        assert self._snapshot is not None
        try:
            path = await asyncio.to_thread(self._save_snapshot, frame, ts)
        except OSError as exc:
            self._snapshot.set_exception(exc)
            return
        self._snapshot.set_result(path)
        event = Reading(
            self.name, "snapshot", str(path), ts, priority=Priority.EVENT, meta={"reason": "requested"}
        )
        await ctx.sink.put([event])

    async def _reload(self, ctx: RunContext) -> None:
        results = await asyncio.to_thread(self.registry.refresh)
        events = []
        for r in results:
            if r.error:
                ctx.log.error("model %s: update refused, previous version keeps running: %s", r.name, r.error)
                events.append(
                    Reading(
                        self.name,
                        f"model.{r.name}.refused",
                        r.error[:200],
                        time.time(),
                        priority=Priority.EVENT,
                    )
                )
            else:
                ctx.log.info("model %s: now version %s", r.name, r.version)
                meta = {"model": r.name, "model_version": str(r.version)}
                events.append(Reading(self.name, f"model.{r.name}.loaded", r.version, time.time(), meta=meta))
        if events:
            await ctx.sink.put(events)


def build_sources(configs: Sequence[Config], ctx: RunContext) -> list[Source]:
    """One :class:`CameraSource` per enabled camera; a refused model is a :class:`ModelError` at start."""
    inference = getattr(ctx.site, "inference", None)
    registry = ModelRegistries.of(ctx).for_config(inference)
    reload_s = inference.reload_check_s if inference is not None else 30.0
    sources: list[Source] = []
    for cfg in configs:
        if not cfg.enabled:
            continue
        try:
            sources.append(CameraSource(cfg, registry, reload_check_s=reload_s))
        except ModelError as exc:
            raise ModelError(f"camera {cfg.name}: {exc}") from exc
    return sources
