"""RSS of the running agent over a long soak at about 2,000 readings/s, sampled and plotted.

    .venv/bin/python bench/bench_rss_soak.py [--devices 134] [--minutes 60] [--every 10] [--png PATH] [--gc default]

Same rig as bench_agent_rss.py (SDM120 meters, 15 points each, polled every second behind one
emulated Modbus TCP gateway, a private Mosquitto and the reference receiver, `edge-agent run`):
134 devices make about 2,000 readings/s. RSS from /proc every ``--every`` seconds with the load
average; a CSV beside the PNG (matplotlib, dev extra). The last line compares the last tenth of the
soak with the first tenth after settling: a flat plateau has a ratio near 1. Each sample also splits
RSS into its anonymous part (the heap: Python objects, SQLite's page cache, OpenSSL) and its
file-backed and shared parts (``RssAnon``, ``RssFile``, ``RssShmem`` from ``/proc/<pid>/status``),
so a drift can be told apart. ``--gc default`` runs the agent with CPython's default collector
settings instead of :mod:`kernel.collector`'s (``bench/gcdefault``, which has other variants too), so
soaks side by side show what the thresholds and the freeze do to memory.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_agent_rss import Meters, cpu_s, rss_mb, site, start_centre

from hil.procs import ManagedProcess, ProcessSet, agent_argv, agent_env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=134)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--every", type=float, default=10.0)
    ap.add_argument("--settle", type=float, default=30.0)
    ap.add_argument("--png", type=Path, default=Path("docs/benchmarks/rss-soak.png"))
    ap.add_argument("--gc", default="agent",
                    help="collector settings: the agent's own, or a variant of bench/gcdefault (default, "
                         "freeze-only, thresholds-only, no-sweep)")
    ap.add_argument("--overlay", nargs="+", metavar="LABEL=CSV",
                    help="run nothing: draw the RSS of earlier soaks (their CSVs) on one chart at --png")
    ap.add_argument("--summarize", nargs="+", metavar="LABEL=CSV",
                    help="run nothing: print earlier soaks (their CSVs) as the markdown rows docs/benchmarks.md shows")
    args = ap.parse_args()
    if args.overlay:
        overlay(args.overlay, args.png)
        return
    if args.summarize:
        runs = [(label, read_csv(Path(path))) for label, _, path in (r.partition("=") for r in args.summarize)]
        print(summary_table(runs))
        return
    meters = Meters(args.devices)
    profile, port = meters.profile, meters.port
    samples: list[tuple[float, float, float, float]] = []  # minutes, RSS MB, CPU %, load
    parts: list[tuple[float, float, float]] = []  # anonymous, file-backed, shared MB
    procs = ProcessSet()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        try:
            key, broker = start_centre(work, procs)
            agent = procs.add(ManagedProcess(
                "agent", agent_argv("run", "--config", str(site(work, key, broker.url, port, args.devices))),
                work / "logs" / "agent.log", soak_env(args.gc),
            ))
            agent.start()
            time.sleep(args.settle)
            pid = agent.pid
            assert pid is not None
            t0 = time.monotonic()
            c_prev, t_prev = cpu_s(pid), t0
            while (now := time.monotonic()) - t0 < args.minutes * 60:
                time.sleep(args.every)
                now = time.monotonic()
                c = cpu_s(pid)
                samples.append(((now - t0) / 60, rss_mb(pid), (c - c_prev) / (now - t_prev) * 100, os.getloadavg()[0]))
                parts.append(rss_parts(pid))
                c_prev, t_prev = c, now
                print(f"{samples[-1][0]:6.1f} min  RSS {samples[-1][1]:6.1f} MB  (anon {parts[-1][0]:5.1f}, "
                      f"file {parts[-1][1]:5.1f}, shmem {parts[-1][2]:4.1f})  CPU {samples[-1][2]:5.1f} %  "
                      f"load {samples[-1][3]:.1f}", flush=True)
        finally:
            procs.stop_all()
            meters.close()
    if not samples:
        return
    tenth = max(1, len(samples) // 10)
    first = sum(s[1] for s in samples[:tenth]) / tenth
    last = sum(s[1] for s in samples[-tenth:]) / tenth
    points = sum(1 for _ in profile.points)
    print(f"{args.devices} devices x {points} points @ 1 s = {args.devices * points} readings/s offered; "
          f"RSS first tenth {first:.1f} MB, last tenth {last:.1f} MB, ratio {last / first:.3f}; "
          f"peak {max(s[1] for s in samples):.1f} MB; collector settings: {args.gc}")
    anon_first = sum(p[0] for p in parts[:tenth]) / tenth
    anon_last = sum(p[0] for p in parts[-tenth:]) / tenth
    print(f"anonymous (heap) first tenth {anon_first:.1f} MB, last tenth {anon_last:.1f} MB; "
          f"file-backed {parts[0][1]:.1f} -> {parts[-1][1]:.1f} MB; shared {parts[0][2]:.1f} -> {parts[-1][2]:.1f} MB")
    csv = args.png.with_suffix(".csv")
    csv.parent.mkdir(parents=True, exist_ok=True)
    csv.write_text("minutes,rss_mb,cpu_percent,load1,anon_mb,file_mb,shmem_mb\n" + "".join(
        f"{m:.2f},{r:.2f},{c:.1f},{ld:.2f},{a:.2f},{fb:.2f},{sh:.2f}\n"
        for (m, r, c, ld), (a, fb, sh) in zip(samples, parts, strict=True)
    ))
    print(summary_table([(f"collector: {args.gc}", samples)]))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot([s[0] for s in samples], [s[1] for s in samples], label="agent RSS (MB)")
    ax.plot([s[0] for s in samples], [p[0] for p in parts], label="of which anonymous (MB)", linestyle="--")
    ax.legend(loc="lower right")
    ax.set_xlabel("minutes after settling")
    ax.set_ylabel("RSS (MB)")
    ax.set_ylim(0, max(s[1] for s in samples) * 1.2)
    ax2 = ax.twinx()
    ax2.plot([s[0] for s in samples], [s[3] for s in samples], color="grey", alpha=0.4, label="load average")
    ax2.set_ylabel("load average (1 min)")
    gc_note = "" if args.gc == "agent" else f", collector: {args.gc}"
    ax.set_title(f"edge-agent run, {args.devices} SDM120 meters, {args.devices * points} readings/s{gc_note}")
    fig.tight_layout()
    fig.savefig(args.png, dpi=100)
    print(f"wrote {args.png} and {csv}")


def read_csv(path: Path) -> list[tuple[float, float, float, float]]:
    """(minutes, RSS MB, CPU %, load) of each sample of a soak's CSV."""
    rows = [line.split(",") for line in path.read_text().splitlines()[1:] if line]
    return [(float(r[0]), float(r[1]), float(r[2]), float(r[3])) for r in rows]


def summary_table(runs: list[tuple[str, list[tuple[float, float, float, float]]]]) -> str:
    """A markdown table, a row per soak: mean RSS per ten minutes (a last sample less than a minute past
    the final ten counts in it), the first and last tenth and their ratio, the peak, mean agent CPU and
    the load range."""
    blocks = max(max(1, math.ceil(rows[-1][0] / 10 - 0.1)) for _, rows in runs)
    heads = [f"{10 * b}-{10 * b + 10}" for b in range(blocks)]
    end = max(rows[-1][0] for _, rows in runs)
    if end < 10 * blocks - 0.5:  # a soak shorter than its last ten minutes: name where it ended
        heads[-1] = f"{10 * (blocks - 1)}-{math.floor(end + 0.5)}"
    heads[0] = f"RSS {heads[0]} min"
    out = [
        "| run | " + " | ".join(heads) + " | first tenth | last tenth | ratio | peak | agent CPU % | load |",
        "|---|" + "---|" * (len(heads) + 6),
    ]
    for label, rows in runs:
        last_block = max(1, math.ceil(rows[-1][0] / 10 - 0.1)) - 1
        sums, counts = [0.0] * blocks, [0] * blocks
        for minutes, rss, _cpu, _load in rows:
            b = min(int(minutes // 10), last_block)
            sums[b] += rss
            counts[b] += 1
        means = [f"{sums[b] / counts[b]:.2f}" if counts[b] else "" for b in range(blocks)]
        tenth = max(1, len(rows) // 10)
        first = sum(r[1] for r in rows[:tenth]) / tenth
        last = sum(r[1] for r in rows[-tenth:]) / tenth
        loads = [r[3] for r in rows]
        out.append(
            f"| {label} | " + " | ".join(means) + f" | {first:.1f} | {last:.1f} | **{last / first:.3f}** "
            f"| {max(r[1] for r in rows):.1f} | {sum(r[2] for r in rows) / len(rows):.1f} "
            f"| {min(loads):.1f}-{max(loads):.1f} |"
        )
    return "\n".join(out)


def overlay(runs: list[str], png: Path) -> None:
    """One chart of several soaks' RSS (``LABEL=CSV`` each, as this script writes them), with each
    run's last-tenth / first-tenth ratio in its legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for run in runs:
        label, _, path = run.partition("=")
        rows = [line.split(",") for line in Path(path).read_text().splitlines()[1:] if line]
        minutes, rss = [float(r[0]) for r in rows], [float(r[1]) for r in rows]
        tenth = max(1, len(rss) // 10)
        ratio = (sum(rss[-tenth:]) / tenth) / (sum(rss[:tenth]) / tenth)
        ax.plot(minutes, rss, label=f"{label} (last/first tenth {ratio:.3f})")
    ax.set_xlabel("minutes after settling")
    ax.set_ylabel("agent RSS (MB)")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("edge-agent run, 134 SDM120 meters, 2,010 readings/s: collector settings side by side")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    print(f"wrote {png}")


def rss_parts(pid: int) -> tuple[float, float, float]:
    """RssAnon, RssFile and RssShmem of ``pid`` in MB (``/proc/<pid>/status``)."""
    found = {"RssAnon:": 0.0, "RssFile:": 0.0, "RssShmem:": 0.0}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key = line.split(maxsplit=1)[0]
            if key in found:
                found[key] = int(line.split()[1]) / 1024
    return found["RssAnon:"], found["RssFile:"], found["RssShmem:"]


def soak_env(collector: str) -> dict[str, str]:
    """The agent's environment; with another ``collector`` than "agent", ``bench/gcdefault`` on its path."""
    env = agent_env()
    if collector != "agent":
        env["KBE_GC_VARIANT"] = collector
        env["PYTHONPATH"] = env["PYTHONPATH"] + os.pathsep + str(Path(__file__).resolve().parent / "gcdefault")
    return env


if __name__ == "__main__":
    main()
