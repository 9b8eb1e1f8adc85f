"""A bank of gpiozero devices: the output API controllers call, and input edges turned into events.

gpiozero calls input callbacks on its own threads (or, with MockFactory, on the thread that drives
the pin); :meth:`GpioBank._emit` hands each event to the asyncio loop with
``call_soon_threadsafe`` into a bounded queue, counting what overflows.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from gpiozero import DigitalInputDevice, DigitalOutputDevice, PWMOutputDevice

from drivers.gpio.config import DEFAULT_STATES, GpioConfig, InputConfig, OutputConfig
from kernel.clock import Clock
from kernel.detectors import DetectorBus, LoopPresence
from kernel.errors import DeviceError, WriteRefused
from kernel.metrics import Metrics
from kernel.readings import Priority, Quality, Reading


class GpioBank:
    """The pins of one ``gpio`` device, built on an injected pin factory.

    Output API (safe to call from the event loop or any thread): :meth:`set_relay`,
    :meth:`set_duty`, :meth:`read_back`, :meth:`feedback`. Every change is also recorded as an
    EVENT reading once the bank is attached to a loop (:meth:`attach`).
    """

    def __init__(
        self,
        device: str,
        cfg: GpioConfig,
        factory: Any,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.device = device
        self.cfg = cfg
        self.factory = factory
        self.clock = clock or Clock()
        self.metrics = metrics or Metrics()
        self._lock = threading.RLock()  # a mock output wired to an input calls back on this thread
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[Reading] | None = None
        self._outputs: dict[str, tuple[OutputConfig, DigitalOutputDevice | PWMOutputDevice]] = {}
        self._feedback: dict[str, DigitalInputDevice] = {}
        self._inputs: dict[str, tuple[InputConfig, DigitalInputDevice]] = {}
        self._counts: dict[str, int] = {}
        self.detectors: DetectorBus | None = None  # loop inputs are published here once attached
        try:
            self._build()
        except Exception as exc:
            self.close()
            if isinstance(exc, DeviceError):
                raise
            raise DeviceError(f"{device}: cannot set up gpio: {exc}") from exc

    def _build(self) -> None:
        for out in self.cfg.outputs:
            dev: DigitalOutputDevice | PWMOutputDevice
            if out.kind == "pwm":
                dev = PWMOutputDevice(
                    out.pin,
                    active_high=out.active_high,
                    initial_value=out.initial,
                    frequency=out.frequency_hz,
                    pin_factory=self.factory,
                )
            else:
                dev = DigitalOutputDevice(
                    out.pin,
                    active_high=out.active_high,
                    initial_value=bool(out.initial),
                    pin_factory=self.factory,
                )
            self._outputs[out.name] = (out, dev)
            if out.feedback_pin is not None:
                self._feedback[out.name] = DigitalInputDevice(
                    out.feedback_pin, pull_up=True, bounce_time=None, pin_factory=self.factory
                )
        for inp in self.cfg.inputs:
            dev_in = DigitalInputDevice(
                inp.pin, pull_up=inp.pull_up, bounce_time=inp.bounce_s or None, pin_factory=self.factory
            )
            dev_in.when_activated = lambda _d, c=inp: self._edge(c, True)
            dev_in.when_deactivated = lambda _d, c=inp: self._edge(c, False)
            self._inputs[inp.name] = (inp, dev_in)
            self._counts[inp.name] = 0

    # -- outputs ---------------------------------------------------------------------------
    def _output(self, name: str, kind: str) -> DigitalOutputDevice | PWMOutputDevice:
        try:
            cfg, dev = self._outputs[name]
        except KeyError:
            raise WriteRefused(
                f"{self.device}: no output {name!r} (have {', '.join(self._outputs) or 'none'})"
            ) from None
        if cfg.kind != kind:
            raise WriteRefused(f"{self.device}.{name}: is a {cfg.kind} output, not {kind}")
        return dev

    def set_relay(self, name: str, on: bool) -> bool:
        """Switch relay ``name``; returns the read-back state. :class:`WriteRefused` for an unknown name."""
        dev = self._output(name, "relay")
        with self._lock:
            dev.value = bool(on)
            back = bool(dev.value)
        self._emit(self._output_reading(name, float(back), Priority.EVENT))
        return back

    def set_duty(self, name: str, duty: float) -> float:
        """Set PWM output ``name`` to ``duty`` (0..1); returns the read-back duty."""
        if not 0.0 <= duty <= 1.0:
            raise WriteRefused(f"{self.device}.{name}: duty {duty} is outside 0..1")
        dev = self._output(name, "pwm")
        with self._lock:
            dev.value = float(duty)
            back = float(dev.value)
        self._emit(self._output_reading(name, back, Priority.EVENT))
        return back

    def read_back(self, name: str) -> float:
        """What output ``name`` is driving now, read from the pin (0/1 for a relay, duty for PWM)."""
        if name not in self._outputs:
            raise DeviceError(f"{self.device}: no output {name!r}")
        with self._lock:
            return float(self._outputs[name][1].value)

    def feedback(self, name: str) -> bool | None:
        """The relay's auxiliary contact (True closed), or None when it has none."""
        dev = self._feedback.get(name)
        return None if dev is None else bool(dev.value)

    def input_state(self, name: str) -> bool:
        """Whether input ``name`` is active now."""
        return bool(self._inputs[name][1].value)

    @property
    def output_names(self) -> list[str]:
        """Names of the outputs, in config order."""
        return list(self._outputs)

    # -- readings --------------------------------------------------------------------------
    def _output_reading(self, name: str, value: float, priority: Priority) -> Reading:
        cfg = self._outputs[name][0]
        fb = self.feedback(name)
        quality = Quality.GOOD
        meta: dict[str, str] = {"kind": cfg.kind}
        if fb is not None and fb != (value >= 0.5):
            quality = Quality.BAD
            meta["fault"] = (
                f"feedback contact {'closed' if fb else 'open'} while relay {'on' if value else 'off'}"
            )
        return Reading(
            self.device,
            name,
            value,
            self.clock.now(),
            "" if cfg.kind == "relay" else "duty",
            quality,
            priority,
            self.clock.quality(),
            meta,
        )

    def _edge(self, cfg: InputConfig, active: bool) -> None:
        if active:
            with self._lock:
                self._counts[cfg.name] += 1
        if cfg.kind in ("loop", "button") and self.detectors is not None:
            self.detectors.publish(LoopPresence(self.device, cfg.name, active))  # a press is "occupied"
        on, off = DEFAULT_STATES[cfg.kind]
        state = (cfg.active_value or on) if active else (cfg.inactive_value or off)
        meta = {"kind": cfg.kind, "state": state}
        self._emit(
            Reading(
                self.device,
                cfg.name,
                active,
                self.clock.now(),
                "",
                Quality.GOOD,
                Priority.EVENT,
                self.clock.quality(),
                meta,
            )
        )

    def publish_loops(self) -> None:
        """Every loop input's present state to the detector bus (at start, before any edge)."""
        if self.detectors is None:
            return
        for name, (cfg, dev) in self._inputs.items():
            if cfg.kind == "loop":
                self.detectors.publish(LoopPresence(self.device, name, bool(dev.value)))

    def snapshot(self) -> list[Reading]:
        """Every output's read-back, every input's state and edge count (periodic telemetry).

        A relay whose feedback contact disagrees is also reported as an ALARM.
        """
        out: list[Reading] = []
        now, clock = self.clock.now(), self.clock.quality()
        for name in self._outputs:
            r = self._output_reading(name, self.read_back(name), Priority.TELEMETRY)
            out.append(r)
            if r.quality == Quality.BAD:
                out.append(
                    Reading(
                        self.device,
                        f"{name}.fault",
                        True,
                        now,
                        "",
                        Quality.GOOD,
                        Priority.ALARM,
                        clock,
                        r.meta,
                    )
                )
        for name, (cfg, dev) in self._inputs.items():
            out.append(
                Reading(self.device, name, bool(dev.value), now, "", clock=clock, meta={"kind": cfg.kind})
            )
            if cfg.kind in ("loop", "button"):
                with self._lock:
                    count = self._counts[name]
                out.append(Reading(self.device, f"{name}.count", count, now, "", clock=clock))
        return out

    # -- loop handover ---------------------------------------------------------------------
    def attach(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Reading]) -> None:
        """Deliver events into ``queue`` on ``loop`` from now on."""
        with self._lock:
            self._loop, self._queue = loop, queue

    def detach(self) -> None:
        """Stop delivering events (they are counted as dropped until the next attach)."""
        with self._lock:
            self._loop = self._queue = None

    def _emit(self, reading: Reading) -> None:
        with self._lock:
            loop, queue = self._loop, self._queue
        if loop is None or queue is None or loop.is_closed():
            self.metrics.inc("kbe_gpio_events_dropped_total", labels={"device": self.device})
            return
        loop.call_soon_threadsafe(self._put, queue, reading)

    def _put(self, queue: asyncio.Queue[Reading], reading: Reading) -> None:
        try:
            queue.put_nowait(reading)
        except asyncio.QueueFull:
            self.metrics.inc("kbe_gpio_events_dropped_total", labels={"device": self.device})

    def close(self) -> None:
        """Release every pin (outputs fall back to the board's reset state)."""
        self.detach()
        for _, dev in self._outputs.values():
            dev.close()
        for fb in self._feedback.values():
            fb.close()
        for _, dev_in in self._inputs.values():
            dev_in.close()
        self._outputs.clear()
        self._feedback.clear()
        self._inputs.clear()
