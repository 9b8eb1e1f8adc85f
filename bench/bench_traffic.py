"""Traffic figures: SUMO rig delays and queues per mode, and time from a lost controller link to flash.

    python bench/bench_traffic.py                   # seeds 1-5, demand x1.0 and x1.4, link-loss trials
    python bench/bench_traffic.py --seeds 1 --trials 5

Part 1 runs the rig for a simulated hour per (mode, seed, demand) and prints the mean delay per
vehicle (SUMO timeLoss, unfinished trips included) and the worst-arm max queue, for the agent's
fixed/actuated/adaptive modes next to SUMO's static/actuated/delay_based programs, with the ratio of
the agent's adaptive delay to SUMO's delay_based delay measured in the same run.

Part 2 serves the emulated signal controller over Modbus TCP behind a cuttable link, runs the field
tick loop (10 Hz), cuts the link and times (a) the envelope latching flash and (b) the controller
showing flashing yellow (its heartbeat watchdog), against the 1 s target and the control round trip
measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.config import load_config
from control.traffic.card import program_card
from control.traffic.source import TrafficSource
from drivers.signals.emulator import ControllerEmulator, ModbusSignalEmulator
from drivers.signals.indications import Indication
from drivers.signals.modbus import ModbusSignalController, TransportRegisterLink
from drivers.transports.tcp import TcpTransport
from hil.linkcut import CuttableLink
from hil.sumo.rig import AGENT_MODES, SUMO_PROGRAMS, RunResult, run
from kernel.progress import Progress, Snapshot

MODES = [*AGENT_MODES, *SUMO_PROGRAMS]
SITE = Path(__file__).resolve().parent.parent / "tests" / "traffic" / "site.yaml"


def sumo_part(seeds: list[int], scales: list[float]) -> None:
    print(f"== SUMO rig: 1 h simulated, seeds {seeds}, step 1 s")
    print(
        f"{'demand':>6} {'mode':<14} {'delay s':>14} {'depart s':>9} {'max queue':>12} {'veh':>6} "
        f"{'viol':>5} {'wall s':>7}"
    )
    progress = Progress("bench traffic")
    steps = len(scales) * len(MODES) * len(seeds)
    t0 = time.monotonic()
    failing: list[str] = []

    def one(mode: str, seed: int, scale: float) -> RunResult:
        r = run(mode, seed, scale)
        if r.violations or r.flashed:
            failing.append(f"{mode} x{scale:g} seed {seed}")
        done = len(done_runs) + 1
        done_runs.append(r)
        elapsed = time.monotonic() - t0
        progress.update(
            Snapshot(
                elapsed,
                elapsed * steps / done,
                failing=failing,
                phase=f"{mode} x{scale:g}",
                done=done,
                steps=steps,
            )
        )
        return r

    done_runs: list[RunResult] = []
    for scale in scales:
        delays: dict[str, float] = {}
        for mode in MODES:
            rs = [one(mode, seed, scale) for seed in seeds]
            progress.close()
            d = [r.mean_delay_s for r in rs]
            q = [r.max_queue for r in rs]
            viol = sum(len(r.violations) for r in rs) + sum(1 for r in rs if r.flashed)
            sd = statistics.stdev(d) if len(d) > 1 else 0.0
            qsd = statistics.stdev(q) if len(q) > 1 else 0.0
            delays[mode] = statistics.mean(d)
            print(
                f"{scale:>6.1f} {mode:<14} {statistics.mean(d):>7.1f} ± {sd:>4.1f} "
                f"{statistics.mean(r.mean_depart_delay_s for r in rs):>9.1f} "
                f"{statistics.mean(q):>6.1f} ± {qsd:>3.1f} {statistics.mean(r.vehicles for r in rs):>6.0f} "
                f"{viol:>5} {statistics.mean(r.wall_s for r in rs):>7.1f}",
                flush=True,
            )
        print(
            f"{scale:>6.1f} ratio adaptive/delay_based delay = {delays['adaptive'] / delays['sumo_delay']:.2f}; "
            f"actuated/sumo_actuated = {delays['actuated'] / delays['sumo_actuated']:.2f}; "
            f"fixed/static = {delays['fixed'] / delays['sumo_static']:.2f}",
            flush=True,
        )


def link_part(trials: int) -> None:
    cfg = load_config(SITE)
    assert cfg.traffic is not None
    ix = cfg.traffic.intersections[0]
    emu = ControllerEmulator(program_card(ix), watchdog_s=0.5)
    server = ModbusSignalEmulator(emu, port=_free_port())
    server.start()
    link = CuttableLink(("127.0.0.1", server.port))
    transport = TcpTransport("127.0.0.1", link.port, connect_timeout=0.3)
    driver = ModbusSignalController(tuple(g.name for g in ix.groups), TransportRegisterLink(transport))
    src = TrafficSource(ix, "Asia/Ho_Chi_Minh", output=driver)
    inter = src.intersection
    rtt: list[float] = []
    agent_s: list[float] = []
    device_s: list[float] = []
    spurious: list[str] = []
    thread = src.start()
    try:
        for _ in range(trials):
            time.sleep(1.5)  # let the junction run
            with inter.lock:
                for _ in range(5):
                    t0 = time.perf_counter()
                    driver.read_back()
                    rtt.append(time.perf_counter() - t0)
            if inter.envelope.latched is not None:  # a spurious trip before the cut (a loaded machine)
                spurious.append(str(inter.envelope.latched))
                with inter.lock:
                    inter.clear("bench")
                time.sleep(1.5)
                if inter.envelope.latched is not None:
                    raise SystemExit(f"the junction keeps tripping: {inter.envelope.latched}")
            t0 = time.monotonic()
            link.cut()
            a = d = None
            while (a is None or d is None) and time.monotonic() - t0 < 5:
                if a is None and inter.envelope.latched is not None:
                    a = time.monotonic() - t0
                if d is None and emu.flashing:
                    d = time.monotonic() - t0
                time.sleep(0.01)
            assert a is not None, "the envelope did not flash within 5 s"
            assert d is not None, "the controller did not flash within 5 s"
            agent_s.append(a)
            device_s.append(d)
            assert set(emu.shown) <= {0, 5}
            assert Indication.FLASH in inter.envelope.shown().values() or inter.envelope.latched
            link.restore()
            time.sleep(0.3)
            with inter.lock:
                inter.clear("bench")
    finally:
        src.stop(thread)
        driver.close()
        link.close()
        server.stop()
    base = statistics.median(rtt)
    print(f"== Lost controller link -> flashing yellow, {trials} trials (Modbus TCP emulator, 10 Hz tick)")
    print(f"control round trip (baseline, same run): median {base * 1000:.1f} ms")
    print(f"spurious trips before a cut: {len(spurious)} {sorted(set(spurious))}")
    for name, xs in (("envelope latched", agent_s), ("controller flashing", device_s)):
        xs = sorted(xs)
        p95 = xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]
        print(
            f"{name:<20} median {statistics.median(xs):.3f} s  p95 {p95:.3f} s  max {max(xs):.3f} s  "
            f"= {max(xs) / 1.0:.2f} x the 1 s target, {statistics.median(xs) / base:.0f} x the round trip"
        )


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0, 1.4])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--skip-sumo", action="store_true")
    a = ap.parse_args()
    if a.trials:
        link_part(a.trials)
    if not a.skip_sumo:
        sumo_part(a.seeds, a.scales)


if __name__ == "__main__":
    main()
