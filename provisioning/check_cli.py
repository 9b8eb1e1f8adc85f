"""``edge-agent provision check``: the commissioning checks, and the report for the work order.

edge-agent provision check --config site.yaml --out reports/ --sample-s 20
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import click

from kernel.i18n import N_, gettext_for, pick_language

SYMBOL = {"ok": "OK  ", "warn": "WARN", "fail": "FAIL", "skip": "--  "}


@click.command("check")
@click.option(
    "--config", "config_file", required=True, type=click.Path(path_type=Path), help="Site config YAML."
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=Path(),
    show_default=True,
    help="Folder for the HTML and JSON reports.",
)
@click.option(
    "--sample-s",
    type=click.FloatRange(1, 3600),
    default=15.0,
    show_default=True,
    help="Seconds to read the devices before judging them.",
)
@click.option(
    "--lang", type=click.Choice(["vi", "en"]), default=None, help="Language of the output (default vi)."
)
def check_cmd(config_file: Path, out_dir: Path, sample_s: float, lang: str | None) -> None:
    """Run every commissioning check; write the report; exit 1 if a check failed."""
    import os

    from agent.commissioning.checks import run_checks, sample_site
    from agent.commissioning.report import write_reports
    from agent.config import load_config

    language = lang or pick_language(os.environ.get("KBE_LANG"))
    _ = gettext_for(language).gettext
    cfg = load_config(config_file)
    click.echo(_(N_("Reading the devices for {s:.0f} s ...")).format(s=sample_s), err=True)
    state = asyncio.run(sample_site(cfg, sample_s))
    results = run_checks(state)
    for r in results:
        click.echo(f"[{SYMBOL[r.status]}] {r.title.render(_)}: {r.detail.render(_)}")
        if r.advice is not None and r.status in ("warn", "fail"):
            click.echo("       " + _(N_("What to do")) + ": " + r.advice.render(_))
    paths = write_reports(results, cfg.site, out_dir, time.time())
    click.echo(_(N_("Report written: {files}")).format(files=", ".join(str(p) for p in paths)))
    if any(r.status == "fail" for r in results):
        raise SystemExit(1)
