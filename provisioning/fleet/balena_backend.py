"""The balena backend of the wave engine, on balena-sdk (the ``operator`` extra; never on a device).

balena-sdk reads its API address from ``api_endpoint`` in ``<data_directory>/balena.cfg`` and its
token from ``token`` there or ``BALENA_API_KEY``. Requests made here (balena API v7, OData):

* devices: ``GET /v7/device?$filter=belongs_to__application eq <app>`` with ``$select`` and
  ``$expand`` of ``is_running__release`` / ``is_pinned_on__release`` (their ``commit``);
* health and marks: ``GET /v7/device_tag?$filter=(device/any(d:d/belongs_to__application eq <app>))
  and (tag_key eq 'kbe.health')`` expanding ``device($select=uuid)``; ``device.tags.set``/``remove``
  (POST ``/v7/device_tag``, PATCH/DELETE with a ``$filter`` on ``device`` and ``tag_key``);
* pins: ``PATCH /v7/device?$filter=id in (...)`` with ``is_pinned_on__release`` (a release id or
  null), ``PATCH /v7/application(<app>)`` with ``should_be_running__release``;
* variables: ``/v7/device_environment_variable`` and ``/v7/application_environment_variable``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.fleet_report import HEALTH_TAG, HealthTag, decode
from kernel.errors import FleetError
from provisioning.fleet.waves import ROLLOUT_TAG, Device

_CHUNK = 50  # devices per PATCH filter: keeps URLs short


def _epoch(value: Any) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _commit(expanded: Any) -> str | None:
    """The commit of an expanded to-one navigation (a list of 0 or 1 objects in pinejs)."""
    if isinstance(expanded, list) and expanded:
        return expanded[0].get("commit")
    if isinstance(expanded, dict):
        return expanded.get("commit")
    return None


class BalenaFleet:
    """A balena fleet (application) as a :class:`provisioning.fleet.waves.FleetBackend`."""

    def __init__(self, fleet: str, data_dir: Path | None = None) -> None:
        try:
            import requests
            from balena import Balena
            from balena.exceptions import BalenaException
        except ImportError as exc:  # the device set has no balena-sdk
            raise FleetError("balena-sdk is not installed: pip install 'kinhbac-edge[operator]'") from exc
        settings: dict[str, Any] = {}
        if data_dir is not None:
            settings["data_directory"] = str(data_dir)
        # SDK errors (HTTP status) and transport errors (refused, timeout, DNS) alike.
        self._errors: tuple[type[Exception], ...] = (BalenaException, requests.RequestException)
        self.sdk = Balena(settings)
        self.fleet = fleet
        app = self._call(self.sdk.models.application.get, fleet, {"$select": ["id", "slug"]})
        self.app_id = int(app["id"])
        self._ids: dict[str, int] = {}

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except self._errors as exc:
            raise FleetError(f"balena API ({self.fleet}): {type(exc).__name__}: {exc}") from exc

    def _device_ids(self, uuids: Sequence[str]) -> list[int]:
        missing = [u for u in uuids if u not in self._ids]
        if missing:
            self.list_devices()
        unknown = [u for u in uuids if u not in self._ids]
        if unknown:
            raise FleetError(f"device {unknown[0]} is not in fleet {self.fleet}")
        return [self._ids[u] for u in uuids]

    # -- reading ----------------------------------------------------------------------------------

    def list_devices(self) -> list[Device]:
        """Every device of the fleet with its release, pin, online state and last connectivity event."""
        rows = self._call(
            self.sdk.models.device.get_all,
            {
                "$select": ["id", "uuid", "device_name", "is_online", "last_connectivity_event"],
                "$filter": {"belongs_to__application": self.app_id},
                "$expand": {
                    "is_running__release": {"$select": ["commit"]},
                    "is_pinned_on__release": {"$select": ["commit"]},
                },
            },
        )
        devices = []
        for row in rows:
            self._ids[row["uuid"]] = int(row["id"])
            devices.append(
                Device(
                    uuid=row["uuid"],
                    name=row.get("device_name") or row["uuid"][:7],
                    online=bool(row.get("is_online")),
                    last_seen=_epoch(row.get("last_connectivity_event")),
                    release=_commit(row.get("is_running__release")),
                    pinned=_commit(row.get("is_pinned_on__release")),
                )
            )
        return devices

    def _tags(self, key: str) -> dict[str, str]:
        rows = self._call(
            self.sdk.models.device.tags.get_all_by_application,
            self.app_id,
            {
                "$select": ["tag_key", "value"],
                "$filter": {"tag_key": key},
                "$expand": {"device": {"$select": ["uuid"]}},
            },
        )
        out: dict[str, str] = {}
        for row in rows:
            dev = row.get("device")
            uuid = dev[0]["uuid"] if isinstance(dev, list) and dev else None
            if uuid:
                out[uuid] = row.get("value") or ""
        return out

    def read_health(self) -> dict[str, HealthTag]:
        """The ``kbe.health`` tag each agent keeps up to date (agent/fleet_report.py)."""
        return {u: tag for u, v in self._tags(HEALTH_TAG).items() if (tag := decode(v)) is not None}

    def read_marks(self) -> dict[str, str]:
        """The ``kbe.rollout`` tags."""
        return self._tags(ROLLOUT_TAG)

    def read_env(self, name: str) -> dict[str, str]:
        """Device-level values of one environment variable."""
        rows = self._call(
            self.sdk.models.device.env_var.get_all_by_application,
            self.app_id,
            {
                "$select": ["name", "value"],
                "$filter": {"name": name},
                "$expand": {"device": {"$select": ["uuid"]}},
            },
        )
        return {
            row["device"][0]["uuid"]: row.get("value") or ""
            for row in rows
            if isinstance(row.get("device"), list) and row["device"]
        }

    # -- changing ---------------------------------------------------------------------------------

    def pin_release(self, uuids: Sequence[str], commit: str | None) -> None:
        """Pin devices to the successful release ``commit``, or let them track the fleet (None)."""
        ids = self._device_ids(uuids)
        for i in range(0, len(ids), _CHUNK):
            chunk = ids[i : i + _CHUNK]
            if commit is None:
                self._call(self.sdk.models.device.track_application_release, chunk)
            else:
                self._call(self.sdk.models.device.pin_to_release, chunk, commit)

    def set_env(self, uuids: Sequence[str], name: str, value: str | None) -> None:
        """Set (or remove) a device environment variable; the supervisor restarts the service with it."""
        for device_id in self._device_ids(uuids):
            if value is None:
                self._call(self.sdk.models.device.env_var.remove, device_id, name)
            else:
                self._call(self.sdk.models.device.env_var.set, device_id, name, value)

    def set_marks(self, marks: Mapping[str, str | None]) -> None:
        """Write or remove the ``kbe.rollout`` tag per device."""
        ids = dict(zip(marks, self._device_ids(list(marks)), strict=True))
        for uuid, value in marks.items():
            if value is None:
                self._call(self.sdk.models.device.tags.remove, ids[uuid], ROLLOUT_TAG)
            else:
                self._call(self.sdk.models.device.tags.set, ids[uuid], ROLLOUT_TAG, value)

    def pin_fleet(self, commit: str) -> None:
        """Pin the whole fleet to ``commit`` (no longer tracking the latest release)."""
        self._call(self.sdk.models.application.pin_to_release, self.app_id, commit)

    def set_fleet_env(self, name: str, value: str) -> None:
        """Set a fleet environment variable."""
        self._call(self.sdk.models.application.env_var.set, self.app_id, name, value)

    def fleet_release(self) -> str | None:
        """The commit the fleet is set to run."""
        return self._call(self.sdk.models.application.get_target_release_hash, self.app_id)
