"""A small coordinated corridor for the centre's tests: three junctions' site configs and the
corridor file naming them (arterial groups ``w`` and ``e``, side street ``ns``, a 20 s cycle, so a plan is taken up within seconds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

SITES = ("kb-cor-1", "kb-cor-2", "kb-cor-3")
POSITIONS = (0.0, 100.0, 200.0)
LOOP_PINS = {"loop_w": 20, "loop_e": 21, "loop_ns": 22}


def junction(k: int, port: int) -> dict[str, Any]:
    """Junction ``k``'s intersection: west and east arterial approaches (stage ``ew``), a side street."""
    return {
        "name": f"j{k + 1}",
        "groups": [{"name": "w"}, {"name": "e"}, {"name": "ns"}],
        "conflicts": [["w", "ns"], ["e", "ns"]],
        "limits": {"speed_kmh": 30, "red_clearance_s": 1, "min_green_s": 4, "link_timeout_s": 0.9},
        "stages": [
            {"name": "ns", "green": ["ns"], "max_green_s": 10},
            {"name": "ew", "green": ["w", "e"], "max_green_s": 20},
        ],
        "plans": [{"name": "corridor", "cycle_s": 20, "offset_s": 4 * k, "splits": {"ns": 8, "ew": 12}}],
        "schedule": {"entries": [{"day_type": "all", "start": "00:00", "plan": "corridor", "mode": "actuated"}]},
        "coordination": {"plan": "corridor", "stage": "ew"},
        "counts_s": 5,
        "detectors": [
            {"name": n, "group": n.removeprefix("loop_"), "kind": "loop", "source": "cabinet", "input": n}
            for n in LOOP_PINS
        ],
        "output": {"driver": "modbus", "host": "127.0.0.1", "port": port, "timeout_s": 0.5},
    }


def site_config(k: int, port: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Junction ``k``'s whole site config (its loops on a gpio bank; ``extra``: sync, store, ...)."""
    return {
        "site": {"id": SITES[k], "name": f"Corridor junction {k + 1}", "location": {"lat": 21.18, "lon": 106.07}},
        "devices": [
            {"driver": "traffic", "name": "signals"},
            {
                "driver": "gpio",
                "name": "cabinet",
                "pin_factory": "rig",
                "inputs": [{"name": n, "pin": p, "kind": "loop", "bounce_s": 0} for n, p in LOOP_PINS.items()],
            },
        ],
        "health": {"listen": None},
        "traffic": {"intersections": [junction(k, port)]},
        **(extra or {}),
    }


def write_corridor(folder: Path, ports: list[int], **override: Any) -> Path:
    """The three site configs and ``corridor.yaml`` in ``folder``; the corridor file's path."""
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(3):
        (folder / f"{SITES[k]}.yaml").write_text(yaml.safe_dump(site_config(k, ports[k])))
    doc = {
        "name": "test-corridor",
        "stage": "ew",
        "eastbound": "w",
        "westbound": "e",
        "speed_mps": 12.5,
        "window_min": 5,
        "cycle_min_s": 20,
        "cycle_max_s": 25,
        "junctions": [
            {"site": SITES[k], "intersection": f"j{k + 1}", "config": f"{SITES[k]}.yaml", "position_m": POSITIONS[k]}
            for k in range(3)
        ],
    } | override
    path = folder / "corridor.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path
