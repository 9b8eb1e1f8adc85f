"""The lighting controller: applies the schedule to the outputs, reads them back, judges the meters.

It is driven by a caller that passes the time (so tests can replay a year in seconds); it never
touches the network. State changes and alarms come back as readings for the store.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from control.lighting.astro import AstroClock
from control.lighting.commands import (
    ClearOverrideCommand,
    OverrideCommand,
    RecalibrateCommand,
    SwitchProfileCommand,
    parse_command,
)
from control.lighting.config import LightingConfig
from control.lighting.failure import LampFailureDetector
from control.lighting.meter import CircuitMeter, MeterSample
from control.lighting.outputs import LightingOutput, OutputState
from control.lighting.photocell import Debounce, LightSensor
from control.lighting.schedule import Decision, Schedule
from control.lighting.state import LightingState, Override
from kernel.commands import CommandOutcome
from kernel.errors import AgentError
from kernel.readings import ClockQuality, Priority, Reading

log = logging.getLogger("kbe.lighting")


@dataclass
class CircuitRuntime:
    """What the controller tracks per circuit."""

    output: LightingOutput
    meter: CircuitMeter | None
    detector: LampFailureDetector
    commanded: OutputState | None = None
    reason: str = ""
    changed_mono: float = -1e18
    readback_bad: bool = False
    last_report: float = -1e18


class LightingController:
    """Runs one site's street lighting."""

    def __init__(
        self,
        device: str,
        cfg: LightingConfig,
        astro: AstroClock,
        outputs: dict[str, LightingOutput],
        meters: dict[str, CircuitMeter] | None = None,
        sensor: LightSensor | None = None,
        state: LightingState | None = None,
    ) -> None:
        self.device = device
        self.cfg = cfg
        self.state = state if state is not None else LightingState.load(cfg.state_path)
        self.schedule = Schedule(cfg, astro, self.state)
        self.sensor = sensor
        self.debounce = Debounce(cfg.photocell.debounce_s if cfg.photocell else 0.0)
        meters = meters or {}
        self.circuits = {
            c.name: CircuitRuntime(
                outputs[c.name],
                meters.get(c.name),
                LampFailureDetector(
                    device, c, self.state.calibration.get(c.name) if c.calibrate_samples else None
                ),
            )
            for c in cfg.circuits
        }

    def _r(
        self,
        point: str,
        value: bool | int | float | str,
        ts: float,
        clock: ClockQuality,
        priority: Priority = Priority.TELEMETRY,
        unit: str = "",
        meta: dict[str, str] | None = None,
    ) -> Reading:
        return Reading(self.device, point, value, ts, unit, priority=priority, clock=clock, meta=meta)

    def decide(self, now: float, mono: float, clock: ClockQuality) -> dict[str, Decision]:
        """Each circuit's wanted state now (reads the sensor)."""
        dark = None
        if self.sensor is not None:
            try:
                raw = self.sensor.is_dark()
            except AgentError as exc:
                log.warning("light sensor unreadable: %s", exc)
                raw = None
            dark = self.debounce.update(raw, mono)
        trusted = not (self.cfg.default_when_clock_unsynced and clock == ClockQuality.UNSYNCED)
        return self.schedule.decide(now, dark, trusted)

    async def step(self, now: float, mono: float, clock: ClockQuality = ClockQuality.SYNCED) -> list[Reading]:
        """Expire overrides, apply decisions to outputs, read them back; return readings."""
        out: list[Reading] = []
        for name, ov in self.state.expire(now).items():
            out.append(
                self._r(
                    f"{name}.override",
                    "expired",
                    now,
                    clock,
                    Priority.EVENT,
                    meta={"level": str(ov.level), "id": ov.command_id},
                )
            )
        if self.sensor is not None:
            await self.sensor.refresh()
        for name, d in self.decide(now, mono, clock).items():
            out.extend(await self._apply(name, d, now, mono, clock))
        return out

    async def _apply(
        self, name: str, d: Decision, now: float, mono: float, clock: ClockQuality
    ) -> list[Reading]:
        rt = self.circuits[name]
        want = OutputState(d.on, d.level if d.on else 0)
        out: list[Reading] = []
        changed = want != rt.commanded
        try:
            await rt.output.heartbeat()
            if changed or rt.readback_bad:
                await rt.output.apply(want.on, want.level)
            shown = await rt.output.read_back()
        except AgentError as exc:
            if not rt.readback_bad:
                out.append(
                    self._r(
                        f"{name}.output_fault",
                        str(exc),
                        now,
                        clock,
                        Priority.ALARM,
                        meta={"alarm": "output_fault", "text": str(exc)},
                    )
                )
            rt.readback_bad = True
            if changed:
                rt.changed_mono = mono
            rt.commanded = want
            return out
        if changed:
            rt.changed_mono = mono
            rt.commanded = want
        mismatch = shown.on != want.on or (want.on and abs(shown.level - want.level) > 1)
        if mismatch and not rt.readback_bad:
            text = (
                f"{name} shows {'on' if shown.on else 'off'} {shown.level}% but was commanded "
                f"{'on' if want.on else 'off'} {want.level}%"
            )
            out.append(
                self._r(
                    f"{name}.output_fault",
                    text,
                    now,
                    clock,
                    Priority.ALARM,
                    meta={"alarm": "output_mismatch", "text": text},
                )
            )
        elif not mismatch and rt.readback_bad:
            out.append(
                self._r(
                    f"{name}.output_fault",
                    "",
                    now,
                    clock,
                    Priority.EVENT,
                    meta={"alarm": "output_mismatch", "cleared": "true"},
                )
            )
        rt.readback_bad = mismatch
        if changed or d.reason != rt.reason or now - rt.last_report >= self.cfg.report_period_s:
            prio = Priority.EVENT if (changed or d.reason != rt.reason) else Priority.TELEMETRY
            meta = {"reason": d.reason}
            out.append(self._r(f"{name}.on", shown.on, now, clock, prio, meta=meta))
            out.append(self._r(f"{name}.level", shown.level, now, clock, prio, "%", meta=meta))
            out.append(self._r(f"{name}.mode", d.reason, now, clock, prio))
            rt.last_report = now
            rt.reason = d.reason
        return out

    def settled(self, name: str, sample: MeterSample) -> bool:
        """Whether ``sample`` was taken at least ``settle_s`` after the circuit last switched."""
        c = self.circuits[name].detector.c
        return sample.mono - self.circuits[name].changed_mono >= c.settle_s

    async def sample_meters(self, now: float, clock: ClockQuality = ClockQuality.SYNCED) -> list[Reading]:
        """Read each circuit meter once and judge it; a dead meter gives a fault reading, not an exception."""
        out: list[Reading] = []
        for name, rt in self.circuits.items():
            if rt.meter is None or rt.commanded is None:
                continue
            try:
                sample = await rt.meter.read()
            except AgentError as exc:
                out.append(self._r(f"{name}.meter_fault", str(exc), now, clock, Priority.EVENT))
                continue
            before = rt.detector.scale
            out.extend(rt.detector.check(sample, rt.commanded, self.settled(name, sample), now, clock))
            if rt.detector.scale is not None and rt.detector.scale != before:
                self.state.calibration[name] = rt.detector.scale
                self.state.save()
        return out

    def apply_command(self, body: object, now: float) -> CommandOutcome:
        """Validate and apply a command from the centre; the outputs follow on the next step.

        A refused command changes nothing; its reason lists every ``field: problem``.
        """
        cmd = parse_command(body)
        if isinstance(cmd, list):
            return CommandOutcome.refused("; ".join(cmd))
        if isinstance(cmd, SwitchProfileCommand):
            return self._switch_profile(cmd)
        targets, problem = self._targets(cmd)
        if problem:
            return CommandOutcome.refused(problem)
        if isinstance(cmd, RecalibrateCommand):
            targets = [t for t in targets if self.circuits[t].detector.c.calibrate_samples > 0]
            if not targets:
                return CommandOutcome.refused("no targeted circuit calibrates (calibrate_samples is 0)")
            for t in targets:
                self.state.calibration.pop(t, None)
                self.circuits[t].detector.recalibrate()
            self.state.save()
            return CommandOutcome.accepted(f"calibration restarted on {','.join(targets)}")
        if isinstance(cmd, OverrideCommand):
            if cmd.duration_s > self.cfg.max_override_s:
                return CommandOutcome.refused(
                    f"duration_s: {cmd.duration_s:g} is not valid: "
                    f"at most max_override_s = {self.cfg.max_override_s:g}"
                )
            until = now + cmd.duration_s
            for t in targets:
                self.state.overrides[t] = Override(cmd.level, until, now, cmd.id)
            self.state.save()
            stamp = dt.datetime.fromtimestamp(until, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            return CommandOutcome.accepted(f"override {','.join(targets)} at {cmd.level} % until {stamp}")
        assert isinstance(cmd, ClearOverrideCommand)
        cleared = [t for t in targets if self.state.overrides.pop(t, None) is not None]
        self.state.save()
        return CommandOutcome.accepted(f"override cleared on {','.join(cleared) or 'no circuit'}")

    def _targets(
        self, cmd: OverrideCommand | ClearOverrideCommand | RecalibrateCommand
    ) -> tuple[list[str], str]:
        if cmd.all:
            return [c.name for c in self.cfg.circuits], ""
        if cmd.circuit is not None:
            if cmd.circuit not in self.circuits:
                return [], f"circuit: {cmd.circuit!r} is not a circuit of this site {sorted(self.circuits)}"
            return [cmd.circuit], ""
        names = [c.name for c in self.cfg.circuits if c.group == cmd.group]
        if not names:
            groups = sorted(g.name for g in self.cfg.groups)
            return [], f"group: {cmd.group!r} is not a group of this site {groups}"
        return names, ""

    def _switch_profile(self, cmd: SwitchProfileCommand) -> CommandOutcome:
        groups = {g.name for g in self.cfg.groups}
        profiles = {p.name for p in self.cfg.profiles}
        if cmd.group not in groups:
            return CommandOutcome.refused(
                f"group: {cmd.group!r} is not a group of this site {sorted(groups)}"
            )
        if cmd.profile is not None and cmd.profile not in profiles:
            return CommandOutcome.refused(f"profile: {cmd.profile!r} is not a profile {sorted(profiles)}")
        if cmd.profile is None:
            self.state.profiles.pop(cmd.group, None)
        else:
            self.state.profiles[cmd.group] = cmd.profile
        self.state.save()
        shown = cmd.profile or f"{self.cfg.group(cmd.group).profile} (configured)"
        return CommandOutcome.accepted(f"group {cmd.group} uses profile {shown}")

    async def close(self) -> None:
        """Release outputs, meters and the sensor."""
        for rt in self.circuits.values():
            await rt.output.close()
            if rt.meter is not None:
                await rt.meter.close()
        if self.sensor is not None:
            await self.sensor.close()
