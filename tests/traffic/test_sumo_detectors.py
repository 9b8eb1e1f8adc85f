"""Pieces the single-junction rig and the corridor share: the detector writer, the link state string (no SUMO needed)."""

from pathlib import Path

from hil.sumo import corridor, scenario
from hil.sumo.scenario import ARMS, LOOP_BEFORE_STOP_M, ZONE_LENGTH_M, detector_rows


def _lanes(prefix: str = "", length: float = 80.0) -> dict[str, float]:
    return {f"{prefix}{a}_in_{lane}": length for a in ARMS for lane in (1, 2, 3)}


def test_rows_without_prefix_name_the_single_rig_detectors() -> None:
    rows = detector_rows(_lanes(), Path("/out"))
    assert len(rows) == len(ARMS) * 3 * 2
    assert rows[0] == (
        f'<inductionLoop id="loop_n_1" lane="n_in_1" pos="{80.0 - LOOP_BEFORE_STOP_M:.2f}" '
        'period="3600" file="/out/e1.xml"/>'
    )
    assert rows[1] == (
        f'<laneAreaDetector id="zone_n_1" lane="n_in_1" pos="{80.0 - ZONE_LENGTH_M:.2f}" '
        f'length="{ZONE_LENGTH_M:.2f}" period="3600" file="/out/e2.xml"/>'
    )


def test_prefix_starts_every_lane_and_detector_id() -> None:
    rows = detector_rows(_lanes("j1_"), Path("/out"), prefix="j1_")
    assert rows[0].startswith('<inductionLoop id="j1_loop_n_1" lane="j1_n_in_1" ')
    assert rows[1].startswith('<laneAreaDetector id="j1_zone_n_1" lane="j1_n_in_1" ')
    assert all('lane="j1_' in r for r in rows)


def test_a_short_lane_gets_a_zone_one_metre_short_of_its_length() -> None:
    rows = detector_rows(_lanes(length=30.0), Path("/out"))
    assert 'pos="1.00" length="29.00"' in rows[1]


def test_single_rig_and_corridor_files_wrap_the_same_rows() -> None:
    single = scenario.detectors_xml(_lanes(), Path("/out"))
    assert single == "<additional>\n" + "\n".join(detector_rows(_lanes(), Path("/out"))) + "\n</additional>\n"
    lanes = {k: v for j in corridor.JUNCTIONS for k, v in _lanes(f"{j}_").items()}
    xml = corridor.detectors_xml(lanes, Path("/out"))
    body = xml.splitlines()[1:-1]
    assert len(body) == len(corridor.JUNCTIONS) * len(ARMS) * 3 * 2
    assert body[: len(ARMS) * 6] == detector_rows(lanes, Path("/out"), prefix=f"{corridor.JUNCTIONS[0]}_")
    assert xml.startswith("<additional>\n")
    assert xml.endswith("</additional>\n")


def test_link_states_show_each_group_on_its_links_and_red_elsewhere() -> None:
    from hil.sumo.plan import link_states

    links = {"n_through": [0, 1], "n_left": [2], "p_n": [5]}
    assert link_states(6, links, {}) == "rrrrrr"
    assert link_states(6, links, {"n_through": "G", "p_n": "g"}) == "GGrrrg"
    assert link_states(6, links, {"n_through": "y", "n_left": "G", "p_n": "r"}) == "yyGrrr"
