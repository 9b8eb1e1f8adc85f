"""Command-line options of the firmware conformance suite and the ``bench`` fixture."""

from __future__ import annotations

import pytest

from firmware_tests.bench import BUGS, Bench, Options


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("firmware", "firmware conformance (device under test)")
    g.addoption(
        "--port",
        default=None,
        help="Device under test: /dev/ttyUSB0, a pty, tcp://H:P, rtu+tcp://H:P. "
        "Without it the suite runs against the profile's emulator.",
    )
    g.addoption("--baud", type=int, default=9600, help="Baud rate (default 9600).")
    g.addoption("--parity", default="N", choices=["N", "E", "O"], help="Parity (default N).")
    g.addoption("--unit", type=int, default=1, help="Unit id of the device under test (default 1).")
    g.addoption("--profile", default="eastron-sdm120", help="Device profile: a shipped name or a YAML path.")
    g.addoption(
        "--answer-timeout", type=float, default=2.0, help="Seconds to wait for any answer (default 2)."
    )
    g.addoption(
        "--answer-limit",
        type=float,
        default=None,
        help="Longest turnaround allowed in seconds (default: the profile's max_answer_s).",
    )
    g.addoption(
        "--expect",
        action="append",
        default=[],
        metavar="POINT=VALUE",
        help="Reference value a real device must read (repeatable), e.g. voltage=230.0.",
    )
    g.addoption(
        "--tolerance", type=float, default=0.01, help="Relative tolerance for --expect (default 0.01)."
    )
    g.addoption(
        "--illegal-function",
        type=lambda s: int(s, 0),
        default=0x28,
        help="A function code the device must refuse with exception 1 (default 0x28, unassigned).",
    )
    g.addoption(
        "--illegal-address",
        type=lambda s: int(s, 0),
        default=None,
        help="An address outside the device's map (default: just past the profile's last point).",
    )
    g.addoption(
        "--other-unit", type=int, default=None, help="A unit id that must get no answer (default unit+1)."
    )
    g.addoption(
        "--bug",
        default="none",
        choices=sorted(BUGS),
        help="Emulator only: give the emulated device a deliberate firmware bug.",
    )


def _expect(items: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise pytest.UsageError(f"--expect {item!r}: use POINT=VALUE")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise pytest.UsageError(f"--expect {item!r}: {value!r} is not a number") from None
    return out


def options(config: pytest.Config) -> Options:
    """The bench options from the command line."""
    opt = config.getoption
    if opt("--port") and opt("--bug") != "none":
        raise pytest.UsageError("--bug applies to the emulator only; drop --port or --bug")
    return Options(
        profile=opt("--profile"),
        port=opt("--port"),
        baud=opt("--baud"),
        parity=opt("--parity"),
        unit=opt("--unit"),
        timeout_s=opt("--answer-timeout"),
        answer_limit_s=opt("--answer-limit"),
        bug=opt("--bug"),
        expect=_expect(opt("--expect")),
        tolerance=opt("--tolerance"),
        illegal_function=opt("--illegal-function"),
        illegal_address=opt("--illegal-address"),
        other_unit=opt("--other-unit"),
    )


def pytest_configure(config: pytest.Config) -> None:
    """Show the suite's progress (one line a minute on stderr)."""
    from firmware_tests.progress import SuiteProgress

    config.pluginmanager.register(SuiteProgress(), "kbe-firmware-progress")


def pytest_report_header(config: pytest.Config) -> list[str]:
    o = options(config)
    target = o.port or f"emulator (bug: {o.bug})"
    return [f"device under test: {target}, unit {o.unit}, {o.baud} {o.parity}, profile {o.profile}"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise point tests over the profile's points (read at collection time)."""
    from drivers.modbus.profile import load_profile

    wants = {"point", "writable_point"} & set(metafunc.fixturenames)
    if not wants:
        return
    profile = load_profile(metafunc.config.getoption("--profile"))
    if "point" in wants:
        metafunc.parametrize("point", profile.points, ids=[p.name for p in profile.points])
    if "writable_point" in wants:
        writable = [p for p in profile.points if p.writable]
        metafunc.parametrize("writable_point", writable or [None], ids=[p.name for p in writable] or ["none"])


@pytest.fixture(scope="session")
def bench(request: pytest.FixtureRequest):
    """The device under test, opened once for the whole run."""
    b = Bench(options(request.config))
    yield b
    b.close()
