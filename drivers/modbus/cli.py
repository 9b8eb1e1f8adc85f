"""``edge-agent modbus``: the technician's view of one device, and profile-driven emulators.

edge-agent modbus read --port /dev/ttyUSB0 --baud 9600 --unit 1 --profile eastron-sdm120
edge-agent modbus read --port tcp://192.168.1.50:502 --unit 1 --profile eastron-sdm630
edge-agent modbus emulate --profile soil-7in1 --profile xy-md02 --pty --baud 9600
edge-agent modbus emulate --profile eastron-sdm120 --tcp 5020
edge-agent modbus profiles
"""

from __future__ import annotations

import asyncio
import json
import signal

import click

from drivers.modbus.bus import ModbusBus
from drivers.modbus.device import DeviceSettings, ModbusDevice
from drivers.modbus.emulator import EmulatedDevice, Emulator, Fault
from drivers.modbus.profile import load_profile, shipped_profiles
from drivers.transports.config import framing_of, parse_port
from kernel.errors import DeviceError, TransportError
from kernel.readings import AVAILABILITY_POINT, Quality, Reading


@click.group("modbus")
def modbus() -> None:
    """Read one Modbus device, run emulators, list shipped profiles."""


async def read_device(
    port: str, unit: int, profile_ref: str, baud: int, parity: str, timeout: float
) -> list[Reading]:
    """Read every point of one device once (used by ``modbus read``)."""
    try:
        line = parse_port(port, baud, parity)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--port") from None
    profile = load_profile(profile_ref)
    dev = ModbusDevice(profile, DeviceSettings(name=f"unit{unit}", unit=unit, timeout_s=timeout, retries=1))
    bus = ModbusBus(line.key(), line.build(), [dev], framing_of(line))
    try:
        await bus.transport.open()
    except (OSError, TransportError) as exc:
        raise DeviceError(f"cannot open {port}: {getattr(exc, 'strerror', None) or exc}") from exc
    try:
        polled = await bus.poll(dev, "fast") + await bus.poll(dev, "slow")
    finally:
        await bus.transport.close()
    readings = [r for r in polled if r.point != AVAILABILITY_POINT]
    if not readings and dev.failures:
        raise DeviceError(
            f"unit {unit} on {port} does not answer (check wiring, A/B, baud rate, parity, unit id)"
        )
    return readings


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


@modbus.command("read")
@click.option(
    "--port", required=True, help="Serial device (/dev/ttyUSB0), tcp://HOST:PORT or rtu+tcp://HOST:PORT."
)
@click.option("--unit", type=click.IntRange(1, 247), default=1, show_default=True, help="Modbus unit id.")
@click.option(
    "--profile", "profile_ref", required=True, help="Shipped profile name or path to a profile YAML."
)
@click.option("--baud", type=int, default=9600, show_default=True, help="Serial baud rate.")
@click.option("--parity", type=click.Choice(["N", "E", "O"]), default="N", show_default=True)
@click.option(
    "--timeout", type=float, default=1.0, show_default=True, help="Seconds to wait for each answer."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
def read_cmd(
    port: str, unit: int, profile_ref: str, baud: int, parity: str, timeout: float, as_json: bool
) -> None:
    """Read and print every point of one device, with units and quality."""
    readings = asyncio.run(read_device(port, unit, profile_ref, baud, parity, timeout))
    if as_json:
        for r in readings:
            out = {"point": r.point, "value": r.value, "unit": r.unit, "quality": r.quality.name}
            click.echo(json.dumps(out, ensure_ascii=False))
        return
    width = max((len(r.point) for r in readings), default=5)
    for r in readings:
        flag = (
            "" if r.quality is Quality.GOOD else f"  [{r.quality.name}: {(r.meta or {}).get('reason', '')}]"
        )
        click.echo(f"{r.point:<{width}}  {_fmt(r.value):>14} {r.unit}{flag}")
    refused = len(load_profile(profile_ref).points) - len(readings)
    if refused:
        click.echo(f"({refused} points refused by the device: illegal data address)", err=True)
    if not any(r.quality is Quality.GOOD for r in readings):
        raise DeviceError(f"no value read from unit {unit} on {port} is GOOD ({len(readings)} read)")


@modbus.command("profiles")
def profiles_cmd() -> None:
    """List the shipped device profiles."""
    for name in shipped_profiles():
        prof = load_profile(name)
        click.echo(f"{name:<16} {prof.manufacturer} {prof.model} ({len(prof.points)} points)")


@modbus.command("emulate")
@click.option(
    "--profile", "profiles", multiple=True, required=True, help="Profile per device (repeat for several)."
)
@click.option(
    "--unit", "units", multiple=True, type=click.IntRange(1, 247), help="Unit ids (default 1, 2, ...)."
)
@click.option("--tcp", "tcp_port", type=int, default=None, help="Serve Modbus TCP on this port.")
@click.option(
    "--pty", "use_pty", is_flag=True, help="Serve RTU on a new pseudo-terminal (its path is printed)."
)
@click.option("--baud", type=int, default=9600, show_default=True, help="Line speed the pty emulates.")
@click.option(
    "--fault", "faults", multiple=True, help="UNIT:KIND[:ARG] to start with, e.g. 2:no_answer, 3:late:0.5."
)
def emulate_cmd(
    profiles: tuple[str, ...],
    units: tuple[int, ...],
    tcp_port: int | None,
    use_pty: bool,
    baud: int,
    faults: tuple[str, ...],
) -> None:
    """Emulate devices from their profiles until Ctrl-C."""
    if (tcp_port is None) == (not use_pty):
        raise click.UsageError("give exactly one of --tcp PORT or --pty")
    unit_ids = list(units) or list(range(1, len(profiles) + 1))
    if len(unit_ids) != len(profiles):
        raise click.UsageError("give one --unit per --profile (or none)")
    devices = [EmulatedDevice(load_profile(p), u, seed=u) for p, u in zip(profiles, unit_ids, strict=False)]
    by_unit = {d.unit: d for d in devices}
    for spec in faults:
        parts = spec.split(":")
        try:
            by_unit[int(parts[0])].set_fault(Fault(parts[1]), float(parts[2]) if len(parts) > 2 else 0.0)
        except (KeyError, ValueError, IndexError):
            raise click.BadParameter(
                f"{spec!r}: expected UNIT:KIND[:ARG] with KIND one of {', '.join(f.value for f in Fault)}",
                param_hint="--fault",
            ) from None
    asyncio.run(_emulate(devices, tcp_port, baud))


async def _emulate(devices: list[EmulatedDevice], tcp_port: int | None, baud: int) -> None:
    emu = Emulator()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if tcp_port is not None:
            port = await emu.add_tcp(devices, tcp_port, "0.0.0.0")
            click.echo(f"modbus tcp on port {port}: " + _summary(devices), nl=True)
        else:
            path = await emu.add_rtu_line(devices, baud)
            click.echo(f"rtu on {path} at {baud} baud: " + _summary(devices))
        await stop.wait()
    finally:
        await emu.close()


def _summary(devices: list[EmulatedDevice]) -> str:
    return ", ".join(f"unit {d.unit} = {d.profile.model}" for d in devices)
