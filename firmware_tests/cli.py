"""``edge-agent firmware-test``: run the conformance suite against a device (or its emulator)."""

from __future__ import annotations

from pathlib import Path

import click

from firmware_tests.bench import BUGS
from kernel.errors import AgentError

SUITE = Path(__file__).resolve().parent
UNREACHABLE_EXIT = 4
"""Exit code when the device cannot be reached at all (1 means it answered and does not conform)."""


def _reachable(port: str, unit: int, profile: str, baud: int, parity: str, timeout: float) -> str | None:
    """None when the device answers something on ``port``; else why it cannot be reached, in one line."""
    import asyncio

    import click as _click

    from drivers.modbus.cli import read_device
    from kernel.errors import ConfigError, DeviceError

    try:
        asyncio.run(read_device(port, unit, profile, baud, parity, timeout))
    except (DeviceError, OSError) as exc:
        return str(exc)
    except _click.BadParameter as exc:
        return exc.format_message()
    except ConfigError:
        return None  # a profile problem: the suite reports it with its path
    return None


@click.command(
    "firmware-test",
    context_settings={"ignore_unknown_options": True, "help_option_names": ["-h", "--help"]},
)
@click.option(
    "--port",
    default=None,
    help="/dev/ttyUSB0, a pty, tcp://HOST:PORT or rtu+tcp://HOST:PORT; omit to test the profile's emulator.",
)
@click.option("--baud", type=int, default=9600, show_default=True)
@click.option("--parity", type=click.Choice(["N", "E", "O"]), default="N", show_default=True)
@click.option("--unit", type=int, default=1, show_default=True)
@click.option("--profile", required=True, help="Shipped profile name or path to a profile YAML.")
@click.option("--timeout", type=float, default=2.0, show_default=True, help="Seconds to wait for an answer.")
@click.option(
    "--answer-limit", type=float, default=None, help="Turnaround limit in s (default: the profile's)."
)
@click.option("--expect", multiple=True, metavar="POINT=VALUE", help="Reference value a point must read.")
@click.option(
    "--bug", type=click.Choice(sorted(BUGS)), default="none", help="Emulator only: a deliberate firmware bug."
)
@click.option("--junit", "junit", type=click.Path(path_type=Path), default=None, help="Write JUnit XML here.")
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
def firmware_test(
    port: str | None,
    baud: int,
    parity: str,
    unit: int,
    profile: str,
    timeout: float,
    answer_limit: float | None,
    expect: tuple[str, ...],
    bug: str,
    junit: Path | None,
    pytest_args: tuple[str, ...],
) -> None:
    """Run the firmware conformance suite; exits 0 when the device conforms, 1 when a check fails,
    4 when the device cannot be reached at all (no port, nothing listening, no answer).

    Extra arguments after the options go to pytest (for example ``-k crc -v``).
    """
    try:
        import pytest
    except ImportError:
        raise AgentError("the conformance suite needs pytest: pip install 'kinhbac-edge[dev]'") from None
    args = [
        str(SUITE),
        "-p",
        "no:cacheprovider",
        "--rootdir",
        str(SUITE),
        "-o",
        "addopts=-ra",
        "--profile",
        profile,
        "--baud",
        str(baud),
        "--parity",
        parity,
        "--unit",
        str(unit),
        "--answer-timeout",
        str(timeout),
        "--bug",
        bug,
    ]
    if port:
        why = _reachable(port, unit, profile, baud, parity, timeout)
        if why is not None:
            click.echo(f"edge-agent firmware-test: cannot reach the device: {why}", err=True)
            raise SystemExit(UNREACHABLE_EXIT)
        args += ["--port", port]
    if answer_limit is not None:
        args += ["--answer-limit", str(answer_limit)]
    for item in expect:
        args += ["--expect", item]
    if junit is not None:
        args += ["--junitxml", str(junit)]
    code = int(pytest.main([*args, *pytest_args]))
    raise SystemExit(0 if code == 0 else (1 if code == 1 else code))
