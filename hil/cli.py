"""``edge-agent hil run RIG.yaml``: run a rig, print the report, write JUnit XML, exit 1 on failure."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import click

from hil.report import junit_broken_rig, junit_error, write_junit
from hil.rigfile import load_any_rig
from hil.runner import RigRun, RunOptions, RunResult
from kernel.errors import AgentError, ConfigError
from kernel.kinds import KindRegistry
from kernel.progress import Progress


@click.group("hil")
def hil_cli() -> None:
    """Hardware-in-the-loop rigs: emulated devices, injected faults, checked expectations."""


@hil_cli.command("run")
@click.argument("rig_file", type=click.Path(path_type=Path))
@click.option(
    "--junit", "junit_file", type=click.Path(dir_okay=False, path_type=Path), help="Write JUnit XML here."
)
@click.option(
    "--speed", type=float, default=None, help="Divide the rig's timeline (duration, fault times) by this."
)
@click.option(
    "--duration", "duration_s", type=float, default=None, help="Run this many seconds (scales the timeline)."
)
@click.option(
    "--work", "work_dir", type=click.Path(file_okay=False, path_type=Path), help="Keep the run's files here."
)
@click.option(
    "--receiver",
    "receiver_db",
    type=click.Choice(["sqlite", "postgres"]),
    default=None,
    help="Receiver database (overrides the rig's receiver.db).",
)
@click.option(
    "--seed", type=int, default=1, show_default=True, help="Seed of the emulators' noise and faults."
)
@click.option(
    "--report",
    "report_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a self-contained HTML report here (and its figures as JSON beside it).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log what the rig does (faults, processes).")
def run_cmd(
    rig_file: Path,
    junit_file: Path | None,
    speed: float | None,
    duration_s: float | None,
    work_dir: Path | None,
    receiver_db: str | None,
    seed: int,
    report_file: Path | None,
    verbose: bool,
) -> None:
    """Run RIG_FILE against the agent; exit 0 when every expectation holds, 1 when one fails."""
    kinds = KindRegistry()  # the installed device kinds: their emulators and ranges
    try:
        rig = load_any_rig(rig_file, kinds)
    except ConfigError as exc:
        # The bench CI still gets a JUnit file, failing with the reason.
        if junit_file is not None:
            junit_file.parent.mkdir(parents=True, exist_ok=True)
            junit_file.write_bytes(junit_broken_rig(rig_file.stem, str(exc)))
        raise
    if speed is not None and duration_s is not None:
        raise click.UsageError("give --speed or --duration, not both")
    if getattr(rig, "kind", None) == "sumo":
        _run_sumo(rig, junit_file, duration_s, speed, work_dir, seed, report_file)
        return
    factor = speed if speed is not None else (rig.duration_s / duration_s if duration_s else 1.0)
    if factor <= 0:
        raise click.UsageError("--speed and --duration must be positive")
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    scaled = rig.scaled(factor)
    progress = Progress(f"hil {rig.rig}")
    opts = RunOptions(
        speed=factor,
        work_dir=work_dir,
        keep=work_dir is not None,
        seed=seed,
        receiver_db=receiver_db,
        on_progress=progress.update,
    )
    try:
        result = asyncio.run(_run(RigRun(scaled, opts, kinds)))
    except (KeyboardInterrupt, asyncio.CancelledError):
        progress.close()
        if junit_file is not None:
            junit_file.parent.mkdir(parents=True, exist_ok=True)
            junit_file.write_bytes(junit_error(scaled.rig, "interrupted (Ctrl-C or SIGTERM) before the end"))
        click.echo("hil: interrupted; every process the rig started has been stopped", err=True)
        raise SystemExit(130) from None
    except AgentError as exc:
        progress.close()
        # The run could not be carried out: still leave a JUnit file saying so for the bench CI.
        if junit_file is not None:
            junit_file.parent.mkdir(parents=True, exist_ok=True)
            junit_file.write_bytes(junit_error(scaled.rig, str(exc)))
        raise
    progress.close()
    click.echo(result.report)
    click.echo(
        f"stored {result.stored_per_s:.1f} readings/s (offered {result.offered_per_s:.1f}/s); agent CPU "
        f"{_fmt(result.agent_cpu_pct, '%')}, RSS max {_fmt(result.agent_rss_max_kib, ' KiB')}; "
        f"agent started {result.agent_starts} times"
    )
    if junit_file is not None:
        write_junit(junit_file, scaled.rig, result.verdict, result.elapsed_s, result.report)
        click.echo(f"JUnit XML: {junit_file}")
    if report_file is not None:
        json_file = write_report(report_file, result)
        click.echo(f"report: {report_file} (figures: {json_file})")
    if not result.verdict.ok:
        raise SystemExit(1)


def _run_sumo(
    rig: Any,
    junit_file: Path | None,
    duration_s: float | None,
    speed: float | None,
    work_dir: Path | None,
    seed: int,
    report_file: Path | None,
) -> None:
    """A traffic rig: SUMO runs as fast as it can, so ``--duration`` sets the simulated seconds."""
    import shutil
    import tempfile

    from hil.sumo.rigfile import run_sumo_rig

    if speed is not None:
        rig = rig.model_copy(update={"duration_s": rig.duration_s / speed})
    if duration_s is not None:
        rig = rig.model_copy(update={"duration_s": duration_s})
    if seed != 1:
        rig = rig.model_copy(update={"seed": seed})
    work = work_dir or Path(tempfile.mkdtemp(prefix=f"hil-{rig.rig}-"))
    work.mkdir(parents=True, exist_ok=True)
    progress = Progress(f"hil {rig.rig}")
    try:
        result = run_sumo_rig(rig, work, progress.update)
    except KeyboardInterrupt:
        progress.close()
        click.echo("hil: interrupted; SUMO has been stopped", err=True)
        raise SystemExit(130) from None
    except Exception as exc:
        progress.close()
        if junit_file is not None:
            junit_file.parent.mkdir(parents=True, exist_ok=True)
            junit_file.write_bytes(junit_error(rig.rig, f"{type(exc).__name__}: {exc}"))
        if isinstance(exc, AgentError):
            raise
        raise AgentError(f"the traffic rig could not run: {type(exc).__name__}: {exc}") from exc
    finally:
        if work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    progress.close()
    click.echo(result.report)
    if junit_file is not None:
        write_junit(junit_file, rig.rig, result.verdict, result.elapsed_s, result.report)
        click.echo(f"JUnit XML: {junit_file}")
    if report_file is not None:
        json_file = _write_figures(report_file, result.figures)
        click.echo(f"report: {report_file} (figures: {json_file})")
    if not result.verdict.ok:
        raise SystemExit(1)


def _write_figures(path: Path, fig: dict[str, Any]) -> Path:
    import json

    from hil.html import render_html

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(fig), encoding="utf-8")
    json_file = path.with_suffix(".json")
    json_file.write_text(json.dumps(fig, indent=1), encoding="utf-8")
    return json_file


def write_report(path: Path, result: RunResult) -> Path:
    """Write the HTML report and its JSON figures (same name, ``.json``); returns the JSON path."""
    from hil.figures import RunData, figures

    fig = figures(
        RunData(
            result.rig,
            result.verdict,
            result.windows,
            result.rows,
            result.samples,
            result.start_wall,
            result.end_wall,
            result.elapsed_s,
            result.extra.get("drain_s"),
        )
    )
    return _write_figures(path, fig)


def _fmt(value: float | int | None, unit: str) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f}{unit}" if isinstance(value, float) else f"{value}{unit}"


async def _run(run: RigRun) -> RunResult:
    """Run with SIGTERM treated like Ctrl-C: the run is cancelled and everything started is stopped."""
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await run.run()
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
