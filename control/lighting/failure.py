"""Lamp-failure detection: what a circuit should draw for what it was commanded, against its meter.

A luminaire at level L (percent) draws ``lamp_min_watts + (lamp_watts - lamp_min_watts) * L / 100``
(LED drivers are close to linear in input power over their dimming range); levels below
``min_level`` are raised to it. Expected current is expected power over (measured voltage x power
factor). After ``settle_s`` from the last switching, a shortfall beyond ``tolerance_pct`` in power or
current is a lamp failure; current above ``off_current_a`` while commanded off is a stuck contactor
or a bypass. Each alarm is raised once (``Priority.ALARM``) and cleared once (``Priority.EVENT``).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from control.lighting.config import CircuitConfig
from control.lighting.meter import MeterSample
from control.lighting.outputs import OutputState
from kernel.readings import ClockQuality, Priority, Reading


def lamp_power(c: CircuitConfig, level: int) -> float:
    """Input power of one luminaire of circuit ``c`` at ``level`` percent while switched on."""
    eff = max(level, c.min_level) if level > 0 else 0
    return c.lamp_min_watts + (c.lamp_watts - c.lamp_min_watts) * eff / 100.0


def expected_power(c: CircuitConfig, state: OutputState) -> float:
    """Power the whole circuit should draw in ``state``."""
    return c.lamps * lamp_power(c, state.level) if state.on else 0.0


@dataclass(frozen=True)
class Verdict:
    """The outcome of one check: failed-lamp estimate and whether current flows while off."""

    expected_w: float
    expected_a: float
    failed_lamps: int
    current_when_off: bool
    judged: bool


def judge(
    c: CircuitConfig, commanded: OutputState, sample: MeterSample, settled: bool, scale: float | None = None
) -> Verdict:
    """Compare a meter sample with what ``commanded`` should draw.

    ``scale`` is the circuit's calibrated measured/expected ratio; with it the expectation is scaled
    and the tighter ``calibrated_tolerance_pct`` applies.
    """
    k = scale if scale is not None else 1.0
    exp_w = expected_power(c, commanded) * k
    volts = sample.voltage if sample.voltage > 50 else 230.0
    exp_a = exp_w / (volts * c.power_factor)
    if not settled:
        return Verdict(exp_w, exp_a, 0, False, False)
    if not commanded.on:
        return Verdict(exp_w, exp_a, 0, sample.current > c.off_current_a, True)
    tol = (c.calibrated_tolerance_pct if scale is not None else c.tolerance_pct) / 100.0
    short_w = sample.power < exp_w * (1 - tol)
    short_a = sample.current < exp_a * (1 - tol)
    failed = 0
    if short_w or short_a:
        per_lamp = lamp_power(c, commanded.level) * k
        deficit = max(exp_w - sample.power, (exp_a - sample.current) * volts * c.power_factor)
        failed = max(1, min(c.lamps, round(deficit / per_lamp))) if per_lamp > 0 else c.lamps
    return Verdict(exp_w, exp_a, failed, False, True)


class LampFailureDetector:
    """Turns meter samples of one circuit into telemetry and alarm readings, raising each alarm once."""

    def __init__(self, device: str, circuit: CircuitConfig, scale: float | None = None) -> None:
        self.device = device
        self.c = circuit
        self.failed_lamps = 0
        self.current_when_off = False
        self.scale = scale
        self._ratios: list[float] = []

    def recalibrate(self) -> None:
        """Forget the learned ratio (after lamps were replaced); learning starts again."""
        self.scale = None
        self._ratios = []

    def _learn(
        self, sample: MeterSample, commanded: OutputState, settled: bool, ts: float, clock: ClockQuality
    ) -> list[Reading]:
        if not (self.c.calibrate_samples and self.scale is None and commanded.on and settled):
            return []
        model = expected_power(self.c, commanded)
        if model <= 0:
            return []
        self._ratios.append(sample.power / model)
        if len(self._ratios) < self.c.calibrate_samples:
            return []
        self.scale = statistics.median(self._ratios)
        self._ratios = []
        text = f"{self.c.name} calibrated: draws {self.scale:.3f} x the modelled power"
        return [self._r("calibration", round(self.scale, 4), ts, "", clock, Priority.EVENT, {"text": text})]

    def _r(
        self,
        point: str,
        value: float | int | bool,
        ts: float,
        unit: str = "",
        clock: ClockQuality = ClockQuality.SYNCED,
        priority: Priority = Priority.TELEMETRY,
        meta: dict[str, str] | None = None,
    ) -> Reading:
        return Reading(
            self.device, f"{self.c.name}.{point}", value, ts, unit, priority=priority, clock=clock, meta=meta
        )

    def check(
        self,
        sample: MeterSample,
        commanded: OutputState,
        settled: bool,
        ts: float,
        clock: ClockQuality = ClockQuality.SYNCED,
    ) -> list[Reading]:
        """Readings for one sample: measurements, expectations and any alarm raised or cleared."""
        learned = self._learn(sample, commanded, settled, ts, clock)
        v = judge(self.c, commanded, sample, settled, self.scale)
        out = [
            self._r("voltage", round(sample.voltage, 1), ts, "V", clock),
            self._r("current", round(sample.current, 3), ts, "A", clock),
            self._r("power", round(sample.power, 1), ts, "W", clock),
            self._r("energy", round(sample.energy_kwh, 3), ts, "kWh", clock),
            self._r("expected_power", round(v.expected_w, 1), ts, "W", clock),
            self._r("expected_current", round(v.expected_a, 3), ts, "A", clock),
        ]
        out.extend(learned)
        if not v.judged:
            return out
        detail = {
            "measured_w": f"{sample.power:.1f}",
            "expected_w": f"{v.expected_w:.1f}",
            "measured_a": f"{sample.current:.3f}",
            "expected_a": f"{v.expected_a:.3f}",
            "commanded": f"{'on' if commanded.on else 'off'} {commanded.level}%",
        }
        if commanded.on and v.failed_lamps != self.failed_lamps:
            if v.failed_lamps > 0:
                text = f"{v.failed_lamps} of {self.c.lamps} lamps on {self.c.name} appear failed"
                out.append(
                    self._r(
                        "lamp_failure",
                        v.failed_lamps,
                        ts,
                        "",
                        clock,
                        Priority.ALARM,
                        {"alarm": "lamp_failure", "text": text, **detail},
                    )
                )
            else:
                out.append(
                    self._r(
                        "lamp_failure",
                        0,
                        ts,
                        "",
                        clock,
                        Priority.EVENT,
                        {"alarm": "lamp_failure", "cleared": "true", **detail},
                    )
                )
            self.failed_lamps = v.failed_lamps
        if not commanded.on and v.current_when_off != self.current_when_off:
            if v.current_when_off:
                text = f"{self.c.name} draws {sample.current:.2f} A while commanded off (stuck contactor?)"
                out.append(
                    self._r(
                        "current_when_off",
                        True,
                        ts,
                        "",
                        clock,
                        Priority.ALARM,
                        {"alarm": "current_when_off", "text": text, **detail},
                    )
                )
            else:
                out.append(
                    self._r(
                        "current_when_off",
                        False,
                        ts,
                        "",
                        clock,
                        Priority.EVENT,
                        {"alarm": "current_when_off", "cleared": "true", **detail},
                    )
                )
            self.current_when_off = v.current_when_off
        out.append(self._r("lamps_failed", self.failed_lamps, ts, "", clock))
        return out
