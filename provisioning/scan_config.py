"""The ``devices:`` section a scan proposes, ready to paste into the site config.

Devices found at the line's majority speed go on one line entry; a device whose floats use another
byte/word order than its shipped profile gets a derived profile file written next to the config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from drivers.modbus.profile import load_profile
from drivers.transports.config import PtyLine, RtuOverTcpLine, SerialLine, TcpLine
from provisioning.scan import FoundDevice, ScanResult


def line_rate(result: ScanResult) -> int | None:
    """The speed most devices answered at (ties go to the lower rate)."""
    rates = [d.baudrate for d in result.devices if d.baudrate]
    if not rates:
        return None
    return min(set(rates), key=lambda b: (-rates.count(b), b))


def _line_entry(result: ScanResult, dev: FoundDevice) -> dict[str, Any]:
    line = result.line
    if isinstance(line, TcpLine):
        return {"type": "tcp", "host": line.host, "port": line.port}
    if isinstance(line, RtuOverTcpLine):
        return {"type": "rtu-over-tcp", "host": line.host, "port": line.port, "baudrate": dev.baudrate}
    if isinstance(line, PtyLine):
        return {"type": "pty", "path": line.path, "baudrate": dev.baudrate, "parity": dev.parity}
    assert isinstance(line, SerialLine)
    return {"type": "serial", "port": line.port, "baudrate": dev.baudrate, "parity": dev.parity}


def derived_profile(dev: FoundDevice, out_dir: Path) -> Path:
    """Write the shipped profile with the byte/word order the device uses; returns its path."""
    assert dev.profile is not None
    prof = load_profile(dev.profile)
    data = prof.model_dump(mode="json", exclude_none=True)
    data["byte_order"], data["word_order"] = dev.byte_order, dev.word_order
    for pt in data["points"]:
        if pt["type"].startswith("float"):
            pt.pop("byte_order", None)
            pt.pop("word_order", None)
    path = out_dir / f"{dev.profile}-{dev.byte_order}-{dev.word_order}.yaml"
    header = f"# {dev.profile} with the byte/word order found by edge-agent provision scan\n"
    path.write_text(header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def propose_devices(
    result: ScanResult, prefix: str = "", profile_dir: Path | None = None
) -> list[dict[str, Any]]:
    """Device entries for every identified device at the line's speed (others are in the problems)."""
    rate = line_rate(result)
    out: list[dict[str, Any]] = []
    for dev in sorted(result.devices, key=lambda d: d.unit):
        if dev.profile is None or (dev.baudrate and dev.baudrate != rate):
            continue
        profile: str = dev.profile
        if dev.order_differs and profile_dir is not None:
            profile_dir.mkdir(parents=True, exist_ok=True)
            profile = str(derived_profile(dev, profile_dir))
        out.append(
            {
                "driver": "modbus",
                "name": f"{prefix}{dev.profile}-u{dev.unit}",
                "profile": profile,
                "unit": dev.unit,
                "line": _line_entry(result, dev),
            }
        )
    return out


def devices_yaml(devices: list[dict[str, Any]]) -> str:
    """The ``devices:`` section as YAML."""
    return yaml.safe_dump({"devices": devices}, sort_keys=False, allow_unicode=True)
