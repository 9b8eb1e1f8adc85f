"""The running agent as the update manager and the health gate see it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.update.gate import PollCounts, Uplink
from kernel.readings import Priority, Reading

if TYPE_CHECKING:
    from agent.app import Agent

POLLED_KINDS = frozenset({"modbus", "pms", "sds011", "nmea_gps"})
"""Device kinds that poll or stream, whose success rate the gate watches (others: task restarts only)."""

# (metric of successes, metric of failures, label value of a success or None when the metric is all successes)
_POLL_METRICS = (("modbus_polls_total", "ok"), ("kbe_serial_frames_total", None), ("kbe_serial_bad_frames_total", ""))


class AgentUpdateHost:
    """Adapts an :class:`~agent.app.Agent` to :class:`~agent.update.manager.UpdateHost`."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def polled_devices(self) -> list[str]:
        """Enabled devices of a polling kind."""
        return [d.name for d in self.agent.cfg.devices if d.enabled and d.driver in POLLED_KINDS]

    def poll_counts(self) -> PollCounts:
        """Successful and failed polls (or good and bad frames) per device, cumulative."""
        out: dict[str, list[float]] = {}
        m = self.agent.metrics
        for name, ok_value in _POLL_METRICS:
            for key, value in m.series(name).items():
                labels = dict(key)
                device = labels.get("device")
                if device is None:
                    continue
                ok = labels.get("result") == ok_value if ok_value else ok_value is None
                out.setdefault(device, [0.0, 0.0])[0 if ok else 1] += value
        # A bus that cannot even be opened (wrong port, missing adapter) fails every device on it.
        on_bus: dict[str, list[str]] = {}
        for dev in self.agent.cfg.devices:
            line = getattr(dev, "line", None)
            if dev.enabled and dev.driver == "modbus" and line is not None:
                on_bus.setdefault(line.key(), []).append(dev.name)
        for key, value in m.series("modbus_transport_errors_total").items():
            for device in on_bus.get(dict(key).get("bus", ""), []):
                out.setdefault(device, [0.0, 0.0])[1] += value
        return {d: (v[0], v[1]) for d, v in out.items()}

    def task_restarts(self) -> dict[str, tuple[int, str | None]]:
        """Restarts and last error of every supervised task."""
        return {n: (s.restarts, s.last_error) for n, s in self.agent.supervisor.states.items()}

    def uplink(self) -> Uplink | None:
        """Connected, readings acknowledged, readings waiting; None without an uplink."""
        up = self.agent.uploader
        if up is None:
            return None
        return Uplink(up.connected, up.acked_readings, self.agent.store.stats().depth)

    def uplink_connected(self) -> bool:
        """Whether replies can go out now (always True without an uplink: nothing to wait for)."""
        up = self.agent.uploader
        return up is None or up.connected

    def send_reply(self, command_id: str, outcome: str, reason: str, phase: str, version: int) -> bool:
        """Publish the update's final reply, and a fresh status."""
        from sync.wire_msgs import CommandReply, build

        up = self.agent.uploader
        if up is None:
            return True
        reply = build(
            CommandReply, site_id=self.agent.cfg.site.id, command_id=command_id, outcome=outcome,
            reason=reason, ts=self.agent.clock.now(), phase=phase, version=version,
        )  # fmt: skip
        sent = up.reply(reply)
        up.status_now()
        return sent

    async def emit_event(self, point: str, value: str, meta: dict[str, str]) -> None:
        """An EVENT reading of the agent itself."""
        a = self.agent
        await a.writer.put(
            [Reading("agent", point, value, a.clock.now(), priority=Priority.EVENT, clock=a.clock.quality(), meta=meta)]
        )

    def request_restart(self) -> None:
        """Ask the runtime to rebuild this agent core from the selected version."""
        self.agent.request_restart()
