"""The firmware conformance suite, run as a bench runs it, passes on correct emulators and fails on buggy ones."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, agent_argv, agent_env

SUITE = str(REPO / "firmware_tests")


def run_suite(*args: str, junit: Path | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "pytest", SUITE, "-p", "no:cacheprovider", "-q", "-o", "addopts=-ra", *args]
    if junit is not None:
        argv += ["--junitxml", str(junit)]
    return subprocess.run(argv, cwd=REPO, env=agent_env(), capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("profile", ["eastron-sdm120", "xy-md02", "soil-7in1"])
def test_suite_passes_on_a_correct_emulator(profile):
    proc = run_suite("--profile", profile)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout
    assert "failed" not in proc.stdout
    # The progress plugin's last line: every test counted, none failing.
    assert "firmware-test  [done]" in proc.stderr
    assert "failing: none" in proc.stderr


# Each bug, and a test that must catch it (by name, as it appears in the failure summary).
BUGS = {
    "wrong-exception": "test_illegal_address_is_exception_2",
    "word-order": "test_point_reads_and_decodes_within_range",
    "late": "test_answer_time_within_limit",
    "bad-crc": "test_answers_carry_a_correct_crc",
    "any-unit": "test_other_unit_ids_get_no_answer",
    "accept-invalid-writes": "test_writable_point_accepts_valid_and_refuses_invalid",
    "no-illegal-function": "test_illegal_function_is_exception_1",
}


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_suite_fails_on_a_buggy_emulator(bug, tmp_path):
    junit = tmp_path / "report.xml"
    # -x for the late device: the timing check runs first, so it fails in seconds, not after every read.
    extra = "-x" if bug == "late" else "-q"
    proc = run_suite("--profile", "eastron-sdm120", "--bug", bug, extra, junit=junit)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    failed = [line for line in proc.stdout.splitlines() if line.startswith("FAILED")]
    assert any(BUGS[bug] in line for line in failed), out[-3000:]
    assert "<failure" in junit.read_text()


def test_cli_runs_the_suite(tmp_path):
    junit = tmp_path / "cli.xml"
    argv = agent_argv("firmware-test", "--profile", "xy-md02", "--junit", str(junit), "-k", "exception")
    proc = subprocess.run(argv, cwd=REPO, env=agent_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert 'failures="0"' in junit.read_text()
    proc = subprocess.run(
        agent_argv("firmware-test", "--profile", "xy-md02", "--bug", "wrong-exception", "-k", "exception"),
        cwd=REPO,
        env=agent_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stdout[-3000:]


@pytest.fixture
def device_on_a_port():
    """An emulated XY-MD02 at unit 5 on a pty served from this process: to the suite, a real port."""
    import asyncio
    import threading

    from drivers.modbus.emulator import EmulatedDevice, Emulator
    from drivers.modbus.profile import load_profile

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    emu = Emulator()
    dev = EmulatedDevice(load_profile("xy-md02"), 5, seed=3)

    def call(coro):
        return asyncio.run_coroutine_threadsafe(coro, loop).result(10)

    async def pin():
        dev.set_value("temperature", 31.4)
        dev.set_value("humidity", 55.0)

    path = call(emu.add_rtu_line([dev], baudrate=9600))
    call(pin())
    yield path, dev
    call(emu.close())
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def test_suite_on_a_port_with_reference_values(device_on_a_port):
    path, dev = device_on_a_port
    base = ("--profile", "xy-md02", "--port", path, "--unit", "5")
    proc = run_suite(
        *base, "--expect", "temperature=31.4", "--expect", "humidity=55", "-k", "point_reads or unit"
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert dev.requests >= 3  # the suite talked to this device through the port
    proc = run_suite(*base, "--expect", "temperature=25.0", "-k", "point_reads")
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "test_point_reads_and_decodes_within_range[temperature]" in proc.stdout
    assert "expected 25.0" in proc.stdout
