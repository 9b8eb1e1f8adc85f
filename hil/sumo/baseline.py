"""SUMO's own actuated and delay_based programs, configured as a competent traffic engineer would.

Same stages, clearances, minimum and maximum greens and detectors as the agent's controller; what
a fair configuration changes against the old one (kept in :func:`hil.sumo.rig.sumo_programs` as
labelled extra rows), each setting and why:

* **Walk first.** A through stage starts with the walk (``min_walk_s``) and its flashing DON'T WALK
  (``ped_clear_s``) as fixed phases while the vehicles already have green, and only then the
  vehicle extension (minDur = the stage's minimum green less walk and clearance; maxDur = its
  maximum green less the same). The old program put the extension first and a fixed pedestrian
  clearance after it, so every gap-out still ran 10 s more green.
* **Empty left bays skipped.** The through stage's extension lists two successors with ``next``:
  the transition into its protected-left stage, taken when the left bays' lane-area zones (the same
  E2 zones the agent reads) hold a vehicle (``finalTarget="a:zone_n_3 + a:zone_s_3 > 0"``), and the
  transition straight into the crossing through stage otherwise. With several successors SUMO's
  actuated logic ends a phase only on an ``earlyTarget`` condition, so each carries the gap-out of
  the stage's through loops (``z:loop_n_1 > 3 and ...``, SUMO's max-gap 3 s) and the left one also
  the bay condition. The agent's controller skips an empty left stage the same way (``skippable``).
* **Detectors.** actuated: SUMO's own loops at ``detector-gap`` 2 s (27.8 m at 50 km/h, where the
  rig's loops are), ``max-gap`` 3 s (SUMO's default), ``jam-threshold`` 30 s (a loop occupied that
  long by a blocked queue stops extending). delay_based: the default ``detectorRange`` (the whole
  approach lane) instead of the old 60 m on 80 m approaches, default ``minTimeloss``.
* delay_based runs its phases in order (its logic has no ``next`` selection); the left stage runs
  its minimum green when empty, and ends on its own when no vehicle there is delayed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from control.traffic.config import IntersectionConfig, ped_clear_s, stage_min_green
from hil.sumo.plan import TLS, link_states

MAX_GAP_S = 3.0  # SUMO's default max-gap


@dataclass
class _Phase:
    name: str
    dur: float
    mn: float
    mx: float
    shown: dict[str, str]
    next: list[str] = field(default_factory=list)
    final_target: str | None = None
    early_target: str | None = None


def _left_zones(groups: list[str], prefix: str = "") -> str:
    arms = [g.split("_")[0] for g in groups if g.endswith("_left")]
    return " + ".join(f"a:{prefix}zone_{a}_3" for a in arms) + " > 0"


def _gap_out(groups: list[str], max_gap: float, prefix: str = "") -> str:
    """SUMO's gap-out on the through lanes' loops (lanes 1 and 2) of the stage's through groups."""
    arms = [g.split("_")[0] for g in groups if g.endswith("_through")]
    return " and ".join(f"z:{prefix}loop_{a}_{lane} > {max_gap:g}" for a in arms for lane in (1, 2))


def fair_phases(ix: IntersectionConfig, skip_lefts: bool, prefix: str = "") -> list[_Phase]:
    """The phase list: walk-first through stages, optional left stages skipped when their bays are empty."""
    lim = ix.limits
    yellow = float(int(lim.yellow + 0.999))
    red = lim.red_clearance_s
    stages = ix.stages
    plan = ix.plans[0]
    out: list[_Phase] = []
    for k, st in enumerate(stages):
        shown = dict.fromkeys(st.green, "G") | dict.fromkeys(st.yield_, "g")
        peds = [n for n in st.green if n.endswith("_ped")]
        green = plan.splits[st.name] - yellow - red
        mn_total, mx_total = stage_min_green(ix, st), st.max_green_s
        name = st.name
        if peds:
            walk = lim.min_walk_s
            fdw = max(ped_clear_s(ix, p) for p in peds)
            out.append(_Phase(f"{name}:walk", walk, walk, walk, dict(shown)))
            no_walk = {**shown, **dict.fromkeys(peds, "r")}
            out.append(_Phase(f"{name}:fdw", fdw, fdw, fdw, no_walk))
            ext_mn = max(1.0, mn_total - walk - fdw)
            ext = _Phase(f"{name}:ext", max(ext_mn, green - walk - fdw), ext_mn, mx_total - walk - fdw, no_walk)
            shown = no_walk
        else:
            ext = _Phase(f"{name}:ext", max(mn_total, green), mn_total, mx_total, dict(shown))
        out.append(ext)
        targets = [(k + 1) % len(stages)]
        nxt = stages[targets[0]]
        if skip_lefts and nxt.skippable:
            targets.append((k + 2) % len(stages))  # the stage after the skipped left
        for t in targets:
            to = stages[t]
            keep = set(to.green) | set(to.yield_)
            ending = {n: ("y" if n not in keep else c) for n, c in shown.items() if c != "r"}
            y = _Phase(f"{name}>{to.name}:y", yellow, yellow, yellow, {**shown, **ending})
            if skip_lefts and len(targets) > 1:
                gap = _gap_out(list(st.green), MAX_GAP_S, prefix)
                if to.skippable:  # into the left stage: on gap-out or max, when its bays hold a vehicle
                    y.early_target = f"{gap} and {_left_zones(list(to.green), prefix)}"
                    y.final_target = _left_zones(list(to.green), prefix)
                else:  # straight on to the crossing stage: on gap-out (or max, as the last choice)
                    y.early_target = gap
            r = _Phase(
                f"{name}>{to.name}:r",
                red,
                red,
                red,
                {n: c for n, c in shown.items() if n in keep and c != "r"},
                next=[f"{to.name}:walk" if any(n.endswith("_ped") for n in to.green) else f"{to.name}:ext"],
            )
            ext.next.append(y.name)
            out += [y, r]
    return out


def coordination_ends(ix: IntersectionConfig, stage: str) -> dict[str, tuple[str, float]]:
    """SUMO's coordinated-actuated bounds per extension phase, in cycle time from the start of the
    plan's first stage: the coordinated stage may not end before its planned end (``earliestEnd``,
    its yield point), every other stage must end by its planned end (``latestEnd``, its force-off).
    The same points as the agent's coordination (:class:`~control.traffic.config.CoordinationConfig`),
    with SUMO's whole-second yellow."""
    plan = ix.plans[0]
    change = float(int(ix.limits.yellow + 0.999)) + ix.limits.red_clearance_s
    out: dict[str, tuple[str, float]] = {}
    t = 0.0
    for st in ix.stages:
        t += plan.splits[st.name]
        out[f"{st.name}:ext"] = ("earliestEnd" if st.name == stage else "latestEnd", t - change)
    return out


def fair_programs(
    ix: IntersectionConfig,
    n_links: int,
    links: dict[str, list[int]],
    tls: str = TLS,
    prefix: str = "",
    offset: float = 0.0,
    coordinate: str | None = None,
) -> str:
    """``<tlLogic>`` elements of the fair ``actuated`` and ``delay_based`` programs (no wrapper).

    A corridor junction passes its light ``tls``, its detectors' ``prefix`` and the plan's
    ``offset`` (used by the coordinated program only); with ``coordinate`` (the arterial stage) a third program ``actuated_coord`` is SUMO's
    coordinated actuated control (``coordinated`` true, ``cycleTime`` the plan's cycle, the bounds of
    :func:`coordination_ends`), the same phases otherwise.
    """

    def text(shown: dict[str, str]) -> str:
        return link_states(n_links, links, shown)

    out: list[str] = []
    programs = [("actuated", "actuated", True), ("delay_based", "delay_based", False)]
    if coordinate is not None:
        programs.append(("actuated_coord", "actuated", True))
    for pid, kind, skip in programs:
        phases = fair_phases(ix, skip, prefix)
        index = {p.name: i for i, p in enumerate(phases)}
        ends = coordination_ends(ix, coordinate) if pid == "actuated_coord" and coordinate else {}
        off = offset if ends else 0.0  # an uncoordinated program has no use for the common offset
        out.append(f'<tlLogic id="{tls}" type="{kind}" programID="{pid}" offset="{off:g}">')
        if kind == "actuated":
            out += [
                f'<param key="max-gap" value="{MAX_GAP_S:g}"/>',
                '<param key="detector-gap" value="2"/>',
                '<param key="jam-threshold" value="30"/>',
            ]
        if ends:
            out += [
                '<param key="coordinated" value="true"/>',
                f'<param key="cycleTime" value="{ix.plans[0].cycle_s:g}"/>',
            ]
        for p in phases:
            attrs = f'duration="{p.dur:g}" state="{text(p.shown)}"'
            if p.mn != p.mx:
                attrs += f' minDur="{p.mn:g}" maxDur="{p.mx:g}"'
            if p.name in ends:
                key, at = ends[p.name]
                attrs += f' {key}="{at:g}"'
            nxt = [index[n] for n in p.next]
            if not skip and len(nxt) > 1:
                nxt = nxt[:1]
            if nxt and nxt != [index[p.name] + 1]:
                attrs += f' next="{" ".join(map(str, nxt))}"'
            if p.early_target:
                attrs += f' earlyTarget="{p.early_target}"'
            if p.final_target:
                attrs += f' finalTarget="{p.final_target}"'
            out.append(f"<phase {attrs}/>")
        out.append("</tlLogic>")
    return "\n".join(out)
