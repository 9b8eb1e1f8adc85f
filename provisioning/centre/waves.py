"""Rollouts in waves over the centre's MQTT update path: a canary wave, then growing waves.

Each wave's sites get the signed update; the wave ends when every site in it has given its final
reply (committed, rolled back, refused) or its deadline passes (silence counts as a failure). When
more sites fail than ``max_failures`` allows, the rollout stops: no later wave is sent, and the
sites of the failed wave that did commit are sent a signed rollback to the version they ran before.
The agents roll themselves back on their own health; this driver only decides whether to go on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from provisioning.centre.link import CentreLink, make_command
from provisioning.fleet.waves import cut_waves
from sync.wire import CommandReply

UPDATE_KIND = "update"


def plan_waves(sites: Sequence[str], canary: int, fractions: Sequence[float]) -> list[list[str]]:
    """Split ``sites`` into a canary wave of ``canary`` sites, then waves up to each cumulative fraction."""
    marks = [min(canary, len(sites))] + [math.ceil(f * len(sites)) for f in fractions] + [len(sites)]
    return cut_waves(sites, marks)


@dataclass
class WaveResult:
    """What happened in one wave."""

    sites: list[str]
    started: float
    ended: float = 0.0
    committed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    first_failure: float | None = None
    rolled_back: float | None = None  # when the last failed site reported its rollback


@dataclass
class RolloutResult:
    """The whole rollout."""

    waves: list[WaveResult]
    stopped: bool
    bytes_sent: int
    compensated: list[str] = field(default_factory=list)
    """Command ids of the rollbacks sent to the failed wave's sites that had committed."""

    @property
    def committed(self) -> list[str]:
        """Sites that committed the update."""
        return [s for w in self.waves for s in w.committed]


def rollout(
    link: CentreLink,
    waves: list[list[str]],
    body_for: Callable[[str], dict[str, Any]],
    previous_version: Callable[[str], int | None],
    max_failures: int = 0,
    wave_timeout_s: float = 120.0,
    ttl_s: float = 600.0,
    progress: Callable[[str], None] = lambda _m: None,
    rollback_watch_s: float = 60.0,
) -> RolloutResult:
    """Send the update wave by wave; stop at the first wave with more than ``max_failures`` failures."""
    results: list[WaveResult] = []
    bytes0 = link.bytes_sent
    for n, sites in enumerate(waves, 1):
        wave = WaveResult(sites, time.monotonic())
        before = {site: previous_version(site) for site in sites}  # what a compensating rollback returns to
        ids: dict[str, str] = {}
        for site in sites:
            cmd = make_command(site, UPDATE_KIND, body_for(site), ttl_s)
            ids[site] = cmd.command_id
            link.send(cmd)
        progress(f"wave {n}/{len(waves)}: sent to {len(sites)} sites")

        link.wait(lambda ids=ids: len(_finals(link, ids)) == len(ids), wave_timeout_s)  # type: ignore[misc]
        wave.ended = time.monotonic()
        got = _finals(link, ids)
        for site in sites:
            final = got.get(site)
            if final is not None and final[0].outcome == "accepted":
                wave.committed.append(site)
            else:
                wave.failed[site] = final[0].reason if final is not None else f"no final reply in {wave_timeout_s:.0f} s"
        fail_times = [got[s][1] for s in wave.failed if s in got]
        if fail_times:
            wave.first_failure = min(fail_times)
            wave.rolled_back = max(fail_times)
        results.append(wave)
        progress(f"wave {n}/{len(waves)}: {len(wave.committed)} committed, {len(wave.failed)} failed "
                 f"in {wave.ended - wave.started:.1f} s")  # fmt: skip
        if len(wave.failed) > max_failures:
            compensated = _roll_back(link, wave.committed, before, ttl_s, rollback_watch_s)
            progress(f"wave {n} failed its threshold ({len(wave.failed)} > {max_failures}): stopped; "
                     f"{len(compensated)} committed sites sent a rollback")  # fmt: skip
            return RolloutResult(results, True, link.bytes_sent - bytes0, compensated)
    return RolloutResult(results, False, link.bytes_sent - bytes0)


def _finals(link: CentreLink, ids: dict[str, str]) -> dict[str, tuple[CommandReply, float]]:
    out = {}
    for site, cid in ids.items():
        final = link.final_reply(cid)
        if final is not None:
            out[site] = final
    return out


def _roll_back(
    link: CentreLink, sites: list[str], before: dict[str, int | None], ttl_s: float, watch_s: float
) -> list[str]:
    sent = []
    for site in sites:
        prev = before.get(site)
        if prev is None:
            continue
        cmd = make_command(site, UPDATE_KIND, {"type": "config", "version": prev, "rollback": True, "watch_s": watch_s}, ttl_s)
        link.send(cmd)
        sent.append(cmd.command_id)
    return sent
