"""Local page: load time and update latency in headless Chromium against `edge-agent run` on an
emulated rig (a Modbus TCP gateway with an energy meter and a climate sensor, polled every 0.5 s).

Run: PYTHONPATH=. .venv/bin/python bench/bench_localpage.py   (needs Debian's chromium, chromium-driver)
- load: navigation start to the first device values on screen (page, script, first /api/state),
  20 loads; baseline: one /api/state request over HTTP from Python in the same run.
- update: a value changed in the emulator (at a random phase) until it shows on the page, 20 changes; the bound it is
  compared with is what the design allows: one poll period (0.5 s) plus one page refresh (1 s).
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import yaml

from drivers.modbus.emulator import EmulatedDevice, Emulator
from drivers.modbus.profile import load_profile
from hil.procs import agent_argv, agent_env, free_port

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def browser(profile: Path):
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = "/usr/bin/chromium"
    for f in FLAGS:
        opts.add_argument(f)
    opts.add_argument(f"--user-data-dir={profile}")
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="kbe-page-bench-"))
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    emu = Emulator()
    meter = EmulatedDevice(load_profile("eastron-sdm120"), 1)
    climate = EmulatedDevice(load_profile("xy-md02"), 2)
    port = asyncio.run_coroutine_threadsafe(emu.add_tcp([meter, climate]), loop).result(10)
    page = free_port()
    line = {"type": "tcp", "host": "127.0.0.1", "port": port}
    cfg = {
        "site": {"id": "bench-page", "name": "Bench", "location": {"lat": 21.15, "lon": 106.16}},
        "devices": [
            {
                "driver": "modbus",
                "name": "meter",
                "profile": "eastron-sdm120",
                "unit": 1,
                "line": line,
                "poll": {"fast_s": 0.5, "slow_s": 5},
            },
            {
                "driver": "modbus",
                "name": "climate",
                "profile": "xy-md02",
                "unit": 2,
                "line": line,
                "poll": {"fast_s": 0.5, "slow_s": 5},
            },
        ],
        "store": {"path": str(tmp / "store.db")},
        "health": {"listen": None},
        "local_page": {"listen": f"127.0.0.1:{page}"},
    }
    (tmp / "site.yaml").write_text(yaml.safe_dump(cfg))
    log = open(tmp / "agent.log", "ab")  # noqa: SIM115
    agent = subprocess.Popen(
        agent_argv("run", "--config", str(tmp / "site.yaml")), env=agent_env(), stdout=log, stderr=log
    )
    drv = None
    try:
        base = f"http://127.0.0.1:{page}"
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/api/state", timeout=2).read()
                break
            except OSError:
                time.sleep(0.2)
        api = []
        for _ in range(20):
            t0 = time.perf_counter()
            urllib.request.urlopen(base + "/api/state", timeout=5).read()
            api.append(time.perf_counter() - t0)
        drv = browser(tmp / "profile")
        drv.get(base + "/")
        loads = []
        for _ in range(20):
            drv.get(base + "/?lang=vi")
            ms = None
            for _ in range(500):
                ms = drv.execute_script(
                    "const c=document.querySelector('#dev-voltage, #dev-meter tr[data-point=voltage] .value');"
                    "return c ? performance.now() : null;"
                )
                if ms is not None:
                    break
                time.sleep(0.005)
            loads.append(ms / 1000.0)
        cell = (
            "return (document.querySelector('#dev-meter tr[data-point=voltage] .value')||{}).textContent||''"
        )
        updates = []
        for i in range(20):
            value = 220.0 + i * 0.5 + 0.25
            want = f"{value:.2f}"
            time.sleep(random.uniform(0.0, 1.5))  # a random phase against the poll and the refresh
            t0 = time.perf_counter()
            loop.call_soon_threadsafe(meter.set_value, "voltage", value)
            while not drv.execute_script(cell).startswith(want):
                if time.perf_counter() - t0 > 10:
                    raise SystemExit(f"value {want} never shown: {drv.execute_script(cell)!r}")
                time.sleep(0.01)
            updates.append(time.perf_counter() - t0)
        la = os.getloadavg()[0]
        med = statistics.median
        print(f"/api/state over HTTP (baseline): median {med(api) * 1000:.1f} ms")
        print(
            f"page load to first values: median {med(loads) * 1000:.0f} ms, max {max(loads) * 1000:.0f} ms; "
            f"ratio to the baseline {med(loads) / med(api):.1f}"
        )
        print(
            f"update latency (emulator -> screen): median {med(updates) * 1000:.0f} ms, "
            f"max {max(updates) * 1000:.0f} ms; bound 1500 ms (0.5 s poll + 1 s refresh), "
            f"median/bound {med(updates) / 1.5:.2f}; load average {la:.2f}"
        )
    finally:
        if drv is not None:
            drv.quit()
        agent.terminate()
        agent.wait(30)
        asyncio.run_coroutine_threadsafe(emu.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)


if __name__ == "__main__":
    sys.exit(main())
