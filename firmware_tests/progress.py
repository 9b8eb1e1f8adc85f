"""Progress of the conformance suite: tests done out of the total, time, failing tests so far.

Against a real device at 9600 baud the suite can take minutes; this writes one line a minute (and
a last one) to the real stderr, between pytest's own output rather than over it.
"""

from __future__ import annotations

import sys
import time

import pytest

from kernel.progress import Progress, Snapshot


class SuiteProgress:
    """A pytest plugin: counts collected and finished tests, names the failing ones."""

    def __init__(self, every_s: float = 60.0) -> None:
        self.progress = Progress("firmware-test", stream=sys.__stderr__, tty=False, every_s=every_s)
        self.t0 = time.monotonic()
        self.total = 0
        self.done = 0
        self.failing: list[str] = []

    def _snap(self, phase: str) -> Snapshot:
        elapsed = time.monotonic() - self.t0
        # Time left estimated from the pace so far (tests take about the same time each).
        total = elapsed * self.total / self.done if self.done else None
        return Snapshot(elapsed, total, failing=self.failing, phase=phase, done=self.done, steps=self.total)

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.total = len(session.items)
        self.t0 = time.monotonic()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.failed and report.nodeid.split("::")[-1] not in self.failing:
            self.failing.append(report.nodeid.split("::")[-1])
        if report.when == "teardown":
            self.done += 1
            self.progress.update(self._snap("run"))

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.total:
            self.progress.close(self._snap("done"))
