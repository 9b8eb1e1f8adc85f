"""kernel/cpuwait.py: the share of wall time this process's threads waited for a core, from schedstat."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from kernel.cpuwait import RunQueueWait, parse_schedstat


def test_the_second_field_is_the_run_queue_wait() -> None:
    assert parse_schedstat("8215384 51096 17\n") == 51096
    with pytest.raises(ValueError):
        parse_schedstat("8215384\n")
    with pytest.raises(ValueError):
        parse_schedstat("")


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _thread(tasks: Path, tid: str, wait_ns: int) -> None:
    (tasks / tid).mkdir(exist_ok=True)
    (tasks / tid / "schedstat").write_text(f"123 {wait_ns} 4\n")


def test_share_is_the_wait_per_wall_second_counted_per_thread(tmp_path: Path) -> None:
    clock = FakeClock()
    _thread(tmp_path, "10", 5_000_000_000)
    _thread(tmp_path, "11", 1_000_000_000)
    meter = RunQueueWait(tmp_path, clock)
    assert meter.share() is None  # the first look only sets the mark
    clock.t += 2.0
    _thread(tmp_path, "10", 6_000_000_000)  # +1 s
    _thread(tmp_path, "11", 2_000_000_000)  # +1 s
    assert meter.share() == pytest.approx(1.0)  # 2 s waited over 2 s of wall time
    clock.t += 2.0
    (tmp_path / "11" / "schedstat").unlink()
    (tmp_path / "11").rmdir()  # thread 11 ended: it takes nothing back
    _thread(tmp_path, "12", 500_000_000)  # a new thread adds its own wait only
    assert meter.share() == pytest.approx(0.25)  # (0 + 0.5 s) / 2 s


def test_no_schedstat_means_no_figure(tmp_path: Path) -> None:
    assert RunQueueWait(tmp_path / "absent").share() is None
    assert RunQueueWait(tmp_path / "absent").share() is None
    (tmp_path / "10").mkdir()  # a thread directory without the file (a kernel without the counts)
    meter = RunQueueWait(tmp_path, FakeClock())
    meter.share()
    assert meter.share() is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="schedstat is Linux's")
def test_this_process_reads_a_figure_on_linux() -> None:
    if not Path("/proc/self/task/").joinpath(str(threading.get_native_id()), "schedstat").exists():
        pytest.skip("this kernel keeps no schedstat")
    clock = FakeClock()
    meter = RunQueueWait(clock=clock)
    assert meter.read()  # one entry per thread, this one at least
    meter.share()
    clock.t += 1.0
    share = meter.share()
    assert share is not None
    assert share >= 0.0
