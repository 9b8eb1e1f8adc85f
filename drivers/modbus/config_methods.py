"""What the running agent calls on a ``modbus`` device entry, shared by the pydantic model
(:mod:`drivers.modbus.config`) and the plain runtime type (:mod:`agent.runconfig`); no pydantic here."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

from drivers.modbus.device import DeviceSettings

_OVERRIDE_FIELDS = ("enabled", "min", "max", "scale", "offset", "unit", "poll")


class PointOverrideMethods:
    """A site's changes to one profile point."""

    __slots__ = ()
    KEEPS_FIELDS_SET = True  # the runtime type keeps model_fields_set too (tools/gen_runconfig.py)

    def as_update(self) -> dict[str, object]:
        """Only the fields the site set."""
        fields_set: Collection[str] = self.model_fields_set  # type: ignore[attr-defined]
        return {name: getattr(self, name) for name in _OVERRIDE_FIELDS if name in fields_set}


class ModbusConfigMethods:
    """One Modbus device at a site."""

    __slots__ = ()
    if TYPE_CHECKING:
        name: str
        unit: int
        timeout_s: float
        retries: int
        poll: Any
        breaker_after: int
        backoff_min_s: float
        backoff_max_s: float
        max_gap: int | None
        overrides: Mapping[str, Any]

    def settings(self) -> DeviceSettings:
        """Acquisition settings for :class:`ModbusDevice`."""
        return DeviceSettings(
            name=self.name,
            unit=self.unit,
            timeout_s=self.timeout_s,
            retries=self.retries,
            fast_s=self.poll.fast_s,
            slow_s=self.poll.slow_s,
            breaker_after=self.breaker_after,
            backoff_min_s=self.backoff_min_s,
            backoff_max_s=self.backoff_max_s,
            max_gap=self.max_gap,
            overrides={k: v.as_update() for k, v in self.overrides.items()},
        )
