"""CLI rough edges of issue 12: a taken health port is one line; firmware-test says "cannot reach the
device" with its own exit code; modbus read exits non-zero when nothing it read is good."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from agent.cli import main
from tests.brokers import wait_port
from tests.conftest import agent_argv, agent_env, free_port

SHIPPED = Path(__file__).resolve().parents[2] / "drivers" / "modbus" / "profiles" / "eastron-sdm120.yaml"


@pytest.mark.parametrize("section", ["health", "local_page"])
def test_running_the_same_config_twice_is_one_line_not_a_traceback(tmp_path, section):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    cfg = tmp_path / "site.yaml"
    cfg.write_text(yaml.safe_dump({
        "site": {"id": "bn-01", "name": "Twice", "location": {"lat": 21.1, "lon": 106.1}},
        "devices": [{"driver": "system", "name": "board", "period_s": 1}],
        "store": {"path": "store.db"},
        "health": {"listen": f"127.0.0.1:{port if section == 'health' else free_port()}"},
        **({"local_page": {"listen": f"127.0.0.1:{port}"}} if section == "local_page" else {}),
    }))
    try:
        out = subprocess.run(agent_argv("run", "--config", str(cfg)), env=agent_env(), capture_output=True,
                             text=True, timeout=60)
    finally:
        taken.close()
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        f"edge-agent: error: {section}.listen 127.0.0.1:{port}: cannot listen: Address already in use "
        "(is another agent running with this config?)"
    )


def test_firmware_test_against_nothing_is_one_line_and_its_own_exit_code(capsys):
    with pytest.raises(SystemExit) as info:
        main(["firmware-test", "--port", f"tcp://127.0.0.1:{free_port()}", "--profile", "eastron-sdm120",
              "--timeout", "0.5"])
    assert info.value.code == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("edge-agent firmware-test: cannot reach the device: cannot open tcp://127.0.0.1:")


def test_modbus_read_exits_non_zero_when_no_value_is_good(tmp_path):
    narrow = yaml.safe_load(SHIPPED.read_text())
    for p in narrow["points"]:
        p["min"], p["max"] = 1e12, 1e13  # every value the meter reads is implausible: BAD
    profile = tmp_path / "narrow.yaml"
    profile.write_text(yaml.safe_dump(narrow, allow_unicode=True))
    port = free_port()
    emu = subprocess.Popen(agent_argv("modbus", "emulate", "--profile", "eastron-sdm120", "--tcp", str(port)),
                           env=agent_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_port(port, 30)
        time.sleep(0.2)
        good = subprocess.run(agent_argv("modbus", "read", "--port", f"tcp://127.0.0.1:{port}", "--profile",
                                         "eastron-sdm120"), env=agent_env(), capture_output=True, text=True,
                              timeout=60)
        bad = subprocess.run(agent_argv("modbus", "read", "--port", f"tcp://127.0.0.1:{port}", "--profile",
                                        str(profile)), env=agent_env(), capture_output=True, text=True, timeout=60)
    finally:
        emu.send_signal(signal.SIGTERM)
        emu.wait(10)
    assert good.returncode == 0, good.stderr
    assert bad.returncode == 1
    assert "[BAD" in bad.stdout  # the values are still shown
    assert bad.stderr.strip().splitlines()[-1].startswith("edge-agent: error: no value read from unit 1 on tcp://")
