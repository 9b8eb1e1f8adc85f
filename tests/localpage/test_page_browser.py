"""The local page in headless Chromium against `edge-agent run` on an emulated rig: log in, values
change, the live chart draws, a device stopped in the rig shows as failed with its reason, the
language switch works, the checks run and the report downloads. Screenshots go to
test-artefacts/localpage/."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import time
from pathlib import Path

import yaml

from drivers.modbus.emulator import EmulatedDevice, Emulator, Fault
from drivers.modbus.profile import load_profile
from tests.conftest import agent_argv, agent_env, free_port
from tests.localpage.browser import chromium

REPO = Path(__file__).resolve().parent.parent.parent
ARTEFACTS = REPO / "test-artefacts" / "localpage"


class LoopThread:
    """The emulators' event loop in a thread (Selenium blocks the test's thread)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn, *args) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def wait(cond, timeout: float = 30.0, what: str = "condition", step: float = 0.2):
    end = time.monotonic() + timeout
    while True:
        try:
            got = cond()
            if got:
                return got
        except Exception:  # the DOM is redrawn every second; a stale element is retried
            got = None
        assert time.monotonic() < end, f"{what} not met in time"
        time.sleep(step)


def write_config(tmp_path: Path, tcp_port: int, page_port: int) -> Path:
    password = tmp_path / "page-password"
    password.write_text("mat-khau-tram\n")
    password.chmod(0o600)
    cfg = {
        "site": {"id": "bn-page-01", "name": "Trạm Quế Võ", "location": {"lat": 21.15, "lon": 106.16}},
        "devices": [
            {
                "driver": "modbus",
                "name": "meter",
                "profile": "eastron-sdm120",
                "unit": 1,
                "line": {"type": "tcp", "host": "127.0.0.1", "port": tcp_port},
                "poll": {"fast_s": 0.5, "slow_s": 2},
                "timeout_s": 0.3,
                "backoff_max_s": 2,
            },
            {
                "driver": "modbus",
                "name": "climate",
                "profile": "xy-md02",
                "unit": 2,
                "line": {"type": "tcp", "host": "127.0.0.1", "port": tcp_port},
                "poll": {"fast_s": 0.5, "slow_s": 2},
                "timeout_s": 0.3,
                "backoff_max_s": 2,
            },
        ],
        "store": {"path": str(tmp_path / "store.db")},
        "health": {"listen": None},
        "local_page": {"listen": f"127.0.0.1:{page_port}", "password_file": str(password)},
    }
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    return path


def test_local_page_in_a_real_browser(tmp_path):
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    loops = LoopThread()
    emu = Emulator()
    meter = EmulatedDevice(load_profile("eastron-sdm120"), 1, seed=1)
    climate = EmulatedDevice(load_profile("xy-md02"), 2, seed=2)
    tcp_port = loops.run(emu.add_tcp([meter, climate]))
    page_port = free_port()
    config = write_config(tmp_path, tcp_port, page_port)
    log = tmp_path / "agent.log"
    with open(log, "ab") as out:
        agent = subprocess.Popen(
            agent_argv("run", "--config", str(config)), env=agent_env(), stdout=out, stderr=out
        )
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser = None
    base = f"http://127.0.0.1:{page_port}"

    def shot(name: str) -> None:
        browser.save_screenshot(str(ARTEFACTS / f"{name}.png"))

    try:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import Select

        browser = chromium(tmp_path / "chromium-profile", downloads)
        browser.set_page_load_timeout(30)
        wait(lambda: b"local page on" in log.read_bytes(), 30, "agent serving its page")

        # Without a session the page asks for the password; a wrong one is refused.
        browser.get(base + "/")
        assert browser.current_url.endswith("/login")
        browser.find_element(By.ID, "password").send_keys("sai")
        browser.find_element(By.ID, "login").click()
        assert (
            wait(lambda: browser.find_element(By.ID, "login-failed").text, 10, "refusal") == "Sai mật khẩu."
        )
        browser.find_element(By.ID, "password").send_keys("mat-khau-tram")
        browser.find_element(By.ID, "login").click()
        wait(lambda: browser.current_url.rstrip("/") == base, 10, "logged in")

        # Vietnamese by default; every device with its values and units.
        assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "vi"
        assert "Thiết bị" in browser.page_source

        def cell(device: str, point: str) -> str:
            return browser.find_element(
                By.CSS_SELECTOR, f'#dev-{device} tr[data-point="{point}"] .value'
            ).text

        first = wait(lambda: cell("meter", "active_power"), 30, "meter values shown")
        assert first.endswith(" W")
        wait(lambda: cell("meter", "active_power") != first, 20, "values change")
        assert browser.find_element(By.ID, "dev-meter").get_attribute("data-status") == "ok"
        assert cell("climate", "humidity").endswith("%RH")

        # The live chart of a chosen point.
        Select(browser.find_element(By.ID, "point")).select_by_value("meter/active_power")
        wait(
            lambda: len(browser.find_element(By.ID, "line").get_attribute("points").split()) > 2,
            15,
            "chart drawn",
        )
        shot("1-live-vi")

        # A device stopped in the rig shows as failed, with its reason in plain words.
        loops.call(climate.set_fault, Fault.NO_ANSWER)
        wait(
            lambda: browser.find_element(By.ID, "dev-climate").get_attribute("data-status") == "fail",
            30,
            "stopped device shown as failed",
        )
        reason = browser.find_element(By.CSS_SELECTOR, "#dev-climate .reason").text
        assert "climate không trả lời" in reason
        assert "dây A/B" in reason
        assert browser.find_element(By.ID, "dev-meter").get_attribute("data-status") == "ok"
        shot("2-device-failed-vi")

        # The language switch.
        browser.find_element(By.ID, "lang-en").click()
        wait(
            lambda: browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en",
            10,
            "English page",
        )
        wait(
            lambda: (
                "climate does not answer"
                in browser.find_element(By.CSS_SELECTOR, "#dev-climate .reason").text
            ),
            10,
            "reason in English",
        )
        assert "Commissioning checks" in browser.page_source

        # The commissioning checks, run from the page.
        browser.find_element(By.ID, "run-checks").click()
        row = wait(lambda: browser.find_element(By.ID, "check-device:climate"), 20, "checks shown")
        assert row.get_attribute("data-status") == "fail"
        assert browser.find_element(By.ID, "check-device:meter").get_attribute("data-status") == "ok"
        shot("3-checks-en")

        # The report downloads.
        browser.find_element(By.ID, "report-html").click()
        report = wait(
            lambda: next(iter(downloads.glob("commissioning-bn-page-01.en.html")), None),
            20,
            "report downloaded",
        )
        html = report.read_text(encoding="utf-8")
        assert "Commissioning report" in html
        assert "climate does not answer" in html
        assert "<svg" in html  # each point's recent values, drawn inline
        assert "http" not in html.split("<body>")[1].replace(
            "http://www.w3.org/2000/svg", ""
        )  # self-contained
        shutil.copy(report, ARTEFACTS / report.name)
        browser.find_element(By.ID, "lang-vi").click()
        wait(
            lambda: browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "vi",
            10,
            "back to Vietnamese",
        )
        browser.find_element(By.ID, "report-html").click()
        report_vi = wait(
            lambda: next(iter(downloads.glob("commissioning-bn-page-01.vi.html")), None),
            20,
            "Vietnamese report downloaded",
        )
        assert "Biên bản nghiệm thu" in report_vi.read_text(encoding="utf-8")
        shot("4-back-vi")
    finally:
        if browser is not None:
            browser.quit()
        agent.terminate()
        try:
            agent.wait(30)
        except subprocess.TimeoutExpired:
            agent.kill()
        loops.run(emu.close())
        loops.stop()
        shutil.copy(log, ARTEFACTS / "agent.log")
