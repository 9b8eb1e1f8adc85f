"""Generate the rig's 4-arm intersection, its demand and detectors from plain XML and netconvert.

One junction ``C``; each arm is a 220 m two-lane link and an 80 m approach where a left-turn bay
opens (lane 1 right + through, lane 2 through, lane 3 left; lane 0 is the sidewalk), 50 km/h, four
signalised crosswalks. Demand: one hour in 15-minute slots with a morning peak on the north-south
axis; 65 % cars, 30 % motorbikes, 5 % buses; 720 pedestrians per hour. Detectors: E1 loops 28 m
before the stop line and E2 lane-area zones over the last 60 m standing in for camera zones.
The numbers follow the feasibility study in ../shared/research/traffic-hil.md.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from xml.sax.saxutils import quoteattr

ARMS = {"n": (0.0, 1.0), "e": (1.0, 0.0), "s": (0.0, -1.0), "w": (-1.0, 0.0)}
# Approach -> (right, through, left) exit arm.
TURNS = {"n": ("w", "s", "e"), "e": ("n", "w", "s"), "s": ("e", "n", "w"), "w": ("s", "e", "n")}
SLOT_S = 900
DEMAND_VPH = {  # per approach, four 15-minute slots
    "s": (600, 1100, 1100, 700),
    "n": (400, 700, 700, 500),
    "e": (300, 400, 400, 350),
    "w": (300, 400, 400, 350),
}
TURN_SHARE = (0.15, 0.70, 0.15)
PEDS_PER_HOUR = 720
LOOP_BEFORE_STOP_M = 28.0
ZONE_LENGTH_M = 60.0


def sumo_home() -> Path:
    """SUMO_HOME of the pip-installed eclipse-sumo (set it if unset)."""
    import sumo

    home = Path(os.environ.get("SUMO_HOME") or Path(sumo.__file__).parent)
    os.environ["SUMO_HOME"] = str(home)
    return home


def binary(name: str) -> str:
    """Path of a SUMO binary (sumo, netconvert)."""
    return str(sumo_home() / "bin" / name)


def _nodes() -> str:
    rows = ['<node id="c" x="0" y="0" type="traffic_light" tl="c"/>']
    for a, (dx, dy) in ARMS.items():
        rows.append(f'<node id="{a}1" x="{dx * 80}" y="{dy * 80}" type="priority"/>')
        rows.append(f'<node id="{a}0" x="{dx * 300}" y="{dy * 300}" type="dead_end"/>')
    return "<nodes>\n" + "\n".join(rows) + "\n</nodes>\n"


def _edges() -> str:
    rows = []
    for a in ARMS:
        side = 'sidewalkWidth="2.0"'
        rows.append(f'<edge id="{a}_far" from="{a}0" to="{a}1" numLanes="2" speed="13.89" {side}/>')
        rows.append(f'<edge id="{a}_in" from="{a}1" to="c" numLanes="3" speed="13.89" {side}/>')
        rows.append(f'<edge id="{a}_out" from="c" to="{a}1" numLanes="2" speed="13.89" {side}/>')
        rows.append(f'<edge id="{a}_away" from="{a}1" to="{a}0" numLanes="2" speed="13.89" {side}/>')
    return "<edges>\n" + "\n".join(rows) + "\n</edges>\n"


def _connections() -> str:
    rows = []
    for a, (right, through, left) in TURNS.items():
        rows.append(f'<connection from="{a}_far" to="{a}_in" fromLane="1" toLane="1"/>')
        rows.append(f'<connection from="{a}_far" to="{a}_in" fromLane="2" toLane="2"/>')
        rows.append(f'<connection from="{a}_far" to="{a}_in" fromLane="2" toLane="3"/>')
        rows.append(f'<connection from="{a}_in" to="{right}_out" fromLane="1" toLane="1"/>')
        rows.append(f'<connection from="{a}_in" to="{through}_out" fromLane="1" toLane="1"/>')
        rows.append(f'<connection from="{a}_in" to="{through}_out" fromLane="2" toLane="2"/>')
        rows.append(f'<connection from="{a}_in" to="{left}_out" fromLane="3" toLane="2"/>')
        rows.append(f'<connection from="{a}_out" to="{a}_away" fromLane="1" toLane="1"/>')
        rows.append(f'<connection from="{a}_out" to="{a}_away" fromLane="2" toLane="2"/>')
        rows.append(f'<crossing node="c" edges="{a}_in {a}_out" priority="false" width="4"/>')
    return "<connections>\n" + "\n".join(rows) + "\n</connections>\n"


def routes_xml(scale: float = 1.0) -> str:
    """Vehicle and pedestrian flows for one hour (Bernoulli arrivals, seeded by SUMO's --seed)."""
    out = [
        "<routes>",
        '<vType id="car" vClass="passenger" length="4.5"/>',
        '<vType id="moto" vClass="motorcycle" length="2.0" maxSpeed="13.9"/>',
        '<vType id="bus" vClass="bus" length="10.0"/>',
        '<vTypeDistribution id="mix" vTypes="car moto bus" probabilities="0.65 0.30 0.05"/>',
    ]
    flows = []
    for a, slots in DEMAND_VPH.items():
        for k, vph in enumerate(slots):
            for turn, share in zip(TURNS[a], TURN_SHARE, strict=True):
                prob = min(1.0, vph * share * scale / 3600.0)
                flows.append(
                    (
                        k * SLOT_S,
                        f'<flow id="f_{a}_{turn}_{k}" type="mix" begin="{k * SLOT_S}" '
                        f'end="{(k + 1) * SLOT_S}" probability="{prob:.5f}" from="{a}_far" to="{turn}_away" '
                        'departLane="best" departSpeed="max"/>',
                    )
                )
    period = 3600.0 * len(ARMS) * 3 / (PEDS_PER_HOUR * scale)
    for a in ARMS:
        for b in ARMS:
            if a == b:
                continue
            flows.append(
                (
                    0,
                    f'<personFlow id="p_{a}_{b}" begin="0" end="3600" period="{period:.2f}">'
                    f'<walk from="{a}_far" to="{b}_away"/></personFlow>',
                )
            )
    # SUMO loads route files incrementally and needs them sorted by departure: pedestrian flows
    # listed after the last vehicle slot (as before) only started in the last quarter-hour.
    flows.sort(key=lambda f: f[0])
    out += [f for _, f in flows]
    out.append("</routes>")
    return "\n".join(out) + "\n"


def detector_rows(lane_length: dict[str, float], out_dir: Path, prefix: str = "") -> list[str]:
    """One junction's E1 loops and E2 zones on the three vehicle lanes of each approach.

    ``prefix`` starts every lane and detector id (``"j0_"`` gives ``j0_loop_n_1`` on lane
    ``j0_n_in_1``); the single rig has none.
    """
    rows = []
    for a in ARMS:
        for lane in (1, 2, 3):
            lid = f"{prefix}{a}_in_{lane}"
            length = lane_length[lid]
            rows.append(
                f'<inductionLoop id="{prefix}loop_{a}_{lane}" lane="{lid}" pos="{length - LOOP_BEFORE_STOP_M:.2f}" '
                f'period="3600" file={quoteattr(str(out_dir / "e1.xml"))}/>'
            )
            zone = min(ZONE_LENGTH_M, length - 1.0)
            rows.append(
                f'<laneAreaDetector id="{prefix}zone_{a}_{lane}" lane="{lid}" pos="{length - zone:.2f}" '
                f'length="{zone:.2f}" period="3600" file={quoteattr(str(out_dir / "e2.xml"))}/>'
            )
    return rows


def detectors_xml(lane_length: dict[str, float], out_dir: Path) -> str:
    """E1 loops and E2 zones on the three vehicle lanes of each approach."""
    return "\n".join(["<additional>", *detector_rows(lane_length, out_dir), "</additional>"]) + "\n"


def netconvert(paths: dict[str, Path]) -> None:
    """Build ``paths["net"]`` from the plain node, edge and connection files (static signals,
    4 s yellow, 2 s all-red, no U-turns, internal links kept)."""
    subprocess.run(
        [
            binary("netconvert"),
            "--node-files",
            str(paths["nod"]),
            "--edge-files",
            str(paths["edg"]),
            "--connection-files",
            str(paths["con"]),
            "--no-turnarounds",
            "--no-internal-links",
            "false",
            "--tls.default-type",
            "static",
            "--tls.yellow.time",
            "4",
            "--tls.allred.time",
            "2",
            "--output-file",
            str(paths["net"]),
            "--no-warnings",
        ],
        check=True,
        capture_output=True,
    )


def write_rig(
    out_dir: Path,
    stem: str,
    scale: float,
    plain: dict[str, str],
    routes: str,
    detectors: Callable[[dict[str, float], Path], str],
) -> dict[str, Path]:
    """Write a rig's plain node, edge and connection files (``plain``: ``nod``, ``edg``, ``con``),
    build its network once (:func:`netconvert`), then its routes at ``scale`` and its detectors on
    the built lanes, as ``<stem>.<kind>.xml`` in ``out_dir``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {k: out_dir / f"{stem}.{k}.xml" for k in ("nod", "edg", "con", "net", "rou", "det")}
    for kind in ("nod", "edg", "con"):
        paths[kind].write_text(plain[kind])
    if not paths["net"].exists():
        netconvert(paths)
    paths["rou"] = out_dir / f"{stem}.rou.{scale:g}.xml"
    paths["rou"].write_text(routes)
    paths["det"].write_text(detectors(lane_lengths(paths["net"]), out_dir))
    return paths


def build(out_dir: Path, scale: float = 1.0) -> dict[str, Path]:
    """Write the network, routes and detectors into ``out_dir``; return their paths."""
    plain = {"nod": _nodes(), "edg": _edges(), "con": _connections()}
    return write_rig(out_dir, "x", scale, plain, routes_xml(scale), detectors_xml)


def lane_lengths(net: Path) -> dict[str, float]:
    """Length of every lane in a .net.xml."""
    import xml.etree.ElementTree as ET

    root = ET.parse(net).getroot()  # noqa: S314 - the file is generated by netconvert
    return {ln.get("id", ""): float(ln.get("length", "0")) for ln in root.iter("lane")}
