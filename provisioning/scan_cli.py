"""``edge-agent provision scan``: find which devices answer on a line, and propose their config.

edge-agent provision scan --port /dev/ttyUSB0 --bauds 9600,19200 --units 1-30
edge-agent provision scan --port tcp://192.168.1.50:502 --units 1-10 --out devices.yaml
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from kernel.errors import ConfigError
from kernel.i18n import N_, gettext_for, pick_language
from provisioning.scan import Progress, Scanner, ScanOptions, ScanResult
from provisioning.scan_config import devices_yaml, line_rate, propose_devices


def parse_units(text: str) -> list[int]:
    """``1-247``, ``1,2,5-9``: unit ids 1 to 247."""
    units: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            a, b = int(lo), int(hi or lo)
            if not 1 <= a <= b <= 247:
                raise ValueError
            units.extend(range(a, b + 1))
    except ValueError:
        raise ConfigError(
            "--units", [f"{text!r}: give unit ids from 1 to 247, e.g. 1-247 or 1,2,10-20"]
        ) from None
    return sorted(set(units))


def parse_bauds(text: str) -> list[int]:
    """``9600,19200``: the baud rates to walk, in order."""
    try:
        bauds = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        bauds = []
    if not bauds or any(not 300 <= b <= 1_000_000 for b in bauds):
        raise ConfigError("--bauds", [f"{text!r}: give baud rates separated by commas, e.g. 9600,19200"])
    return bauds


def _stderr(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


def default_language() -> str:
    """``KBE_LANG``, else Vietnamese."""
    return pick_language(os.environ.get("KBE_LANG"))


def render_result(result: ScanResult, lang: str) -> list[str]:
    """The scan's findings as lines in ``lang``."""
    _ = gettext_for(lang).gettext
    lines = [
        _(N_("Scan of {port}: {n} device(s) found in {s:.1f} s ({probes} probes).")).format(
            port=result.line.key(), n=len(result.devices), s=result.elapsed_s, probes=result.probes
        )
    ]
    for d in sorted(result.devices, key=lambda d: (d.baudrate or 0, d.unit)):
        where = f"{d.baudrate} 8{d.parity}1" if d.baudrate else "TCP"
        if d.profile:
            what = _(N_("{profile} (by {how}, fit {score:.0%})")).format(
                profile=d.profile, how=_(d.identified_by), score=d.score
            )
        else:
            what = _(N_("not identified"))
        extra = f" [{d.vendor} {d.product}]" if d.product else ""
        lines.append(
            _(N_("  unit {unit:>3} at {where}: {what}{extra}")).format(
                unit=d.unit, where=where, what=what, extra=extra
            )
        )
        if d.order_differs:
            lines.append(
                _(
                    N_(
                        "      floats use byte order {b}, word order {w} (not the profile's); a "
                        "derived profile is proposed"
                    )
                ).format(b=d.byte_order, w=d.word_order)
            )
    for m in result.problems:
        lines.append(_(N_("PROBLEM: {text}")).format(text=m.render(_)))
    for m in result.notes:
        lines.append(_(N_("note: {text}")).format(text=m.render(_)))
    if result.wire_limit_s:
        lines.append(
            _(N_("The line itself needs {limit:.1f} s for these frames and timeouts.")).format(
                limit=result.wire_limit_s
            )
        )
    return lines


# Shown through gettext in render_result.
N_("device identification (43/14)")
N_("register fingerprint")


@click.command("scan")
@click.option(
    "--port",
    required=True,
    help="Serial device, pty, tcp://HOST:PORT (Modbus TCP or RTU gateway) or rtu+tcp://HOST:PORT.",
)
@click.option("--bauds", default="9600,19200,4800", show_default=True, help="Baud rates to walk, in order.")
@click.option(
    "--parity", "parities", default="N", show_default=True, help="Parities to walk: N, E, O or N,E."
)
@click.option(
    "--units", default="1-247", show_default=True, help="Unit ids to probe, e.g. 1-30 or 1,5,10-20."
)
@click.option(
    "--margin-ms",
    type=click.FloatRange(1, 2000),
    default=50.0,
    show_default=True,
    help="Turnaround a device gets beyond the frames' time on the wire.",
)
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path),
    default=None,
    help="Write the proposed devices: section to this YAML file.",
)
@click.option("--name-prefix", default="", help="Prefix of the proposed device names.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.option(
    "--lang", type=click.Choice(["vi", "en"]), default=None, help="Language (default vi; KBE_LANG)."
)
def scan_cmd(
    port: str,
    bauds: str,
    parities: str,
    units: str,
    margin_ms: float,
    out: Path | None,
    name_prefix: str,
    as_json: bool,
    lang: str | None,
) -> None:
    """Walk baud rates, parities and unit ids; identify each device; propose the devices: section."""
    parity_list = [x.strip().upper() for x in parities.split(",") if x.strip()]
    if not parity_list or any(x not in ("N", "E", "O") for x in parity_list):
        raise ConfigError("--parity", [f"{parities!r}: give N, E, O or a list such as N,E"])
    opts = ScanOptions(port, parse_bauds(bauds), parity_list, parse_units(units), margin_ms / 1000.0)
    language = lang or default_language()
    tty = sys.stderr.isatty()
    result = Scanner(opts, lambda n: Progress(n, _stderr, tty)).run_sync()
    profile_dir = out.parent / "profiles" if out is not None else None
    devices = propose_devices(result, name_prefix, profile_dir)
    if as_json:
        click.echo(json.dumps(result_json(result, devices, language), ensure_ascii=False, indent=1))
    else:
        for line in render_result(result, language):
            click.echo(line)
        click.echo("")
        click.echo(devices_yaml(devices), nl=False)
    if out is not None:
        out.write_text(devices_yaml(devices), encoding="utf-8")


def result_json(result: ScanResult, devices: list[dict[str, object]], lang: str) -> dict[str, object]:
    """Machine-readable findings."""
    _ = gettext_for(lang).gettext
    return {
        "port": result.line.key(),
        "framing": result.framing,
        "line_baudrate": line_rate(result),
        "found": [
            {
                "unit": d.unit,
                "baudrate": d.baudrate,
                "parity": d.parity,
                "profile": d.profile,
                "score": round(d.score, 3),
                "identified_by": d.identified_by,
                "vendor": d.vendor,
                "product": d.product,
                "byte_order": d.byte_order,
                "word_order": d.word_order,
                "candidates": d.candidates,
            }
            for d in result.devices
        ],
        "problems": [m.render(_) for m in result.problems],
        "notes": [m.render(_) for m in result.notes],
        "devices": devices,
        "elapsed_s": round(result.elapsed_s, 3),
        "wire_limit_s": round(result.wire_limit_s, 3),
        "probes": result.probes,
    }
