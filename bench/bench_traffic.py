"""Traffic figures: SUMO rig delays and queues per mode, and time from a lost controller link to flash.

    python bench/bench_traffic.py                   # seeds 1-5, demand x1.0 and x1.4, link-loss trials
    python bench/bench_traffic.py --seeds 1 --trials 5
    python bench/bench_traffic.py --trials 0 --jobs 2   # the SUMO table only, two runs at a time
    python bench/bench_traffic.py --trials 0 --jobs 2 --skip-sumo --corridor --seeds 1 2 3   # corridor

Part 1 runs the rig for a simulated hour per (mode, seed, demand) and prints, per seed, the mean
delay per vehicle (SUMO timeLoss, unfinished trips included) with its ratio to the best fairly
configured SUMO program of the same seed and demand (static, actuated, delay_based; see
hil/sumo/baseline.py), the stops per vehicle, the worst-arm max queue, the mean pedestrian time
loss and the vehicles arrived within the hour; then the means. The agent's fixed/actuated/adaptive
modes run next to SUMO's programs; ``sumo_*_old`` rows are the old, handicapped configuration.

Part 1b (``--corridor``) runs the three-junction corridor (hil/sumo/corridor.py) per (mode, seed,
demand): delay and stops per vehicle through the whole arterial, side-street delay, all vehicles'
delay, pedestrian delay, vehicles arrived and the worst approach's max queue, with the arterial
delay's ratio to the best SUMO program of the same seed and demand (static with progression
offsets, actuated, coordinated actuated, delay_based).

Part 2 serves the emulated signal controller over Modbus TCP behind a cuttable link, runs the field
tick loop (10 Hz), cuts the link and times (a) the envelope latching flash and (b) the controller
showing flashing yellow (its heartbeat watchdog), against the 1 s target and the control round trip
measured in the same run.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.config import load_config
from control.traffic.card import program_card
from control.traffic.source import TrafficSource
from drivers.modbus.link import ModbusLink
from drivers.signals.emulator import ControllerEmulator, ModbusSignalEmulator
from drivers.signals.indications import Indication
from drivers.signals.modbus import ModbusSignalController, ThreadLink
from drivers.transports.tcp import TcpTransport
from hil.linkcut import CuttableLink
from hil.sumo import corridor
from hil.sumo.rig import AGENT_MODES, BUILD_DIR, SUMO_PROGRAMS, RunResult, run
from kernel.progress import Progress, Snapshot

MODES = [*AGENT_MODES, *SUMO_PROGRAMS]
SITE = Path(__file__).resolve().parent.parent / "tests" / "traffic" / "site.yaml"


FAIR = ("sumo_static", "sumo_actuated", "sumo_delay")  # the baseline; *_old rows are for reference only


def _one(args: tuple[str, int, float]) -> RunResult:
    mode, seed, scale = args
    return run(mode, seed, scale, out_dir=BUILD_DIR / f"{mode}-{seed}-{scale:g}")


def sumo_part(seeds: list[int], scales: list[float], jobs: int) -> None:
    print(f"== SUMO rig: 1 h simulated, seeds {seeds}, step 1 s, load average {os.getloadavg()[0]:.1f}")
    todo = [(m, seed, scale) for scale in scales for seed in seeds for m in MODES]
    with concurrent.futures.ProcessPoolExecutor(jobs) as pool:
        progress = Progress("bench traffic")
        t0, done_runs, failing = time.monotonic(), [], []
        for done, r in enumerate(pool.map(_one, todo), 1):
            done_runs.append(r)
            if r.violations or r.flashed:
                failing.append(f"{r.mode} x{r.scale:g} seed {r.seed}")
            elapsed = time.monotonic() - t0
            progress.update(
                Snapshot(elapsed, elapsed * len(todo) / done, failing=failing, phase=f"{r.mode} x{r.scale:g}",
                         done=done, steps=len(todo))
            )
        progress.close()
        results = dict(zip(todo, done_runs, strict=True))
    head = (
        f"{'demand':>6} {'seed':>4} {'mode':<18} {'delay s':>8} {'/best':>6} {'stops':>6} {'max q':>6} "
        f"{'ped s':>6} {'arrived':>7} {'viol':>4}"
    )
    print(head)
    for scale in scales:
        for seed in seeds:
            rs = {m: results[(m, seed, scale)] for m in MODES}
            best = min(rs[m].mean_delay_s for m in FAIR)
            for m, r in rs.items():
                viol = len(r.violations) + (1 if r.flashed else 0)
                print(
                    f"{scale:>6.1f} {seed:>4} {m:<18} {r.mean_delay_s:>8.1f} {r.mean_delay_s / best:>6.2f} "
                    f"{r.stops:>6.2f} {r.max_queue:>6} {r.ped_delay_s:>6.1f} {r.arrived:>7} {viol:>4}"
                )
    print(f"== means over seeds {seeds} (ratio: mean of the per-seed ratios to the best fair SUMO program)")
    print(head.replace(" seed", "     "))
    for scale in scales:
        for m in MODES:
            runs = [results[(m, seed, scale)] for seed in seeds]
            ratios = [
                results[(m, seed, scale)].mean_delay_s
                / min(results[(f, seed, scale)].mean_delay_s for f in FAIR)
                for seed in seeds
            ]
            sd = statistics.stdev(r.mean_delay_s for r in runs) if len(runs) > 1 else 0.0
            print(
                f"{scale:>6.1f} {'':>4} {m:<18} {statistics.mean(r.mean_delay_s for r in runs):>5.1f}±{sd:<3.1f}"
                f"{statistics.mean(ratios):>5.2f} {statistics.mean(r.stops for r in runs):>6.2f} "
                f"{statistics.mean(r.max_queue for r in runs):>6.1f} "
                f"{statistics.mean(r.ped_delay_s for r in runs):>6.1f} "
                f"{statistics.mean(r.arrived for r in runs):>7.0f} "
                f"{sum(len(r.violations) + (1 if r.flashed else 0) for r in runs):>4}",
                flush=True,
            )


CORRIDOR_MODES = [*corridor.AGENT_MODES, *corridor.SUMO_PROGRAMS]


def _one_corridor(args: tuple[str, int, float]) -> corridor.CorridorResult:
    mode, seed, scale = args
    return corridor.run(mode, seed, scale, out_dir=corridor.BUILD_DIR / f"{mode}-{seed}-{scale:g}")


def corridor_part(seeds: list[int], scales: list[float], jobs: int) -> None:
    print(
        f"== SUMO corridor (3 junctions, 300 m): 1 h simulated, seeds {seeds}, "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    todo = [(m, seed, scale) for scale in scales for seed in seeds for m in CORRIDOR_MODES]
    t0 = time.monotonic()
    with concurrent.futures.ProcessPoolExecutor(jobs) as pool:
        results = dict(zip(todo, pool.map(_one_corridor, todo), strict=True))
    wall = [r.wall_s for r in results.values()]
    print(
        f"   {len(todo)} runs in {time.monotonic() - t0:.0f} s; one simulated hour took "
        f"{min(wall):.0f}-{max(wall):.0f} s of wall time; load average {os.getloadavg()[0]:.1f}"
    )
    head = (
        f"{'demand':>6} {'seed':>4} {'mode':<20} {'art s':>6} {'/best':>6} {'art stops':>9} {'side s':>6} "
        f"{'all s':>6} {'/best':>6} {'stops':>5} {'max q':>5} {'ped s':>6} {'arrived':>7} {'viol':>4}"
    )
    sumo = list(corridor.SUMO_PROGRAMS)

    def row(
        scale: float, seed: str, m: str, rs: list[corridor.CorridorResult], ratio: float, all_ratio: float
    ) -> str:
        def avg(f: str) -> float:
            return statistics.mean(float(getattr(r, f)) for r in rs)

        return (
            f"{scale:>6.1f} {seed:>4} {m:<20} {avg('arterial_delay_s'):>6.1f} {ratio:>6.2f} "
            f"{avg('arterial_stops'):>9.2f} {avg('side_delay_s'):>6.1f} {avg('mean_delay_s'):>6.1f} "
            f"{all_ratio:>6.2f} {avg('stops'):>5.2f} {avg('max_queue'):>5.0f} {avg('ped_delay_s'):>6.1f} {avg('arrived'):>7.0f} "
            f"{sum(r.findings for r in rs):>4}"
        )

    def ratio(m: str, seed: int, scale: float, f: str = "arterial_delay_s") -> float:
        best = min(getattr(results[(b, seed, scale)], f) for b in sumo)
        return float(getattr(results[(m, seed, scale)], f)) / best

    print(head)
    for scale in scales:
        for seed in seeds:
            for m in CORRIDOR_MODES:
                r1, r2 = ratio(m, seed, scale), ratio(m, seed, scale, "mean_delay_s")
                print(row(scale, str(seed), m, [results[(m, seed, scale)]], r1, r2))
    print(
        f"== corridor means over seeds {seeds} (ratios: mean of per-seed arterial-delay and all-vehicle-delay "
        "ratios to the best SUMO program by that figure)"
    )
    print(head)
    for scale in scales:
        for m in CORRIDOR_MODES:
            rs = [results[(m, seed, scale)] for seed in seeds]
            r1 = statistics.mean(ratio(m, s, scale) for s in seeds)
            r2 = statistics.mean(ratio(m, s, scale, "mean_delay_s") for s in seeds)
            print(row(scale, "", m, rs, r1, r2), flush=True)


def link_part(trials: int) -> None:
    cfg = load_config(SITE)
    assert cfg.traffic is not None
    ix = cfg.traffic.intersections[0]
    emu = ControllerEmulator(program_card(ix), watchdog_s=0.5)
    server = ModbusSignalEmulator(emu, port=_free_port())
    server.start()
    link = CuttableLink(("127.0.0.1", server.port))
    transport = TcpTransport("127.0.0.1", link.port, connect_timeout=0.3)
    driver = ModbusSignalController(tuple(g.name for g in ix.groups), ThreadLink(ModbusLink(transport, 1, 0.3)))
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
    ap.add_argument("--jobs", type=int, default=1, help="SUMO runs in parallel")
    ap.add_argument("--corridor", action="store_true", help="also the three-junction corridor")
    a = ap.parse_args()
    if a.trials:
        link_part(a.trials)
    if not a.skip_sumo:
        sumo_part(a.seeds, a.scales, a.jobs)
    if a.corridor:
        corridor_part(a.seeds, a.scales, a.jobs)


if __name__ == "__main__":
    main()
