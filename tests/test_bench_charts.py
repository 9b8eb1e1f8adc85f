"""bench/charts.py: the recorded benchmark tables drawn as PNG charts and referenced from the docs."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent


def _charts() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_charts", REPO / "bench" / "charts.py")
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


DOC = """# Benchmarks

### Store ingest (`bench/bench_store.py`)

| Run (load 0.7) | Store | Bare SQLite | Ratio |
|---|---|---|---|
| batches of 5,000 | **134,381 readings/s** | 149,242 readings/s | 0.90 |
| batches of 50 | 12,000 readings/s | n/a | |

text after
"""


def test_figures_are_read_from_the_tables_cells() -> None:
    charts = _charts()
    (t,) = charts.tables(DOC)
    assert t.heading == "Store ingest (bench/bench_store.py)"
    assert t.slug == "store-ingest"
    assert charts.number("**134,381 readings/s**") == 134381.0
    assert charts.number("35.0 ± 0.9") == 35.0
    assert math.isnan(charts.number("n/a"))
    cols = dict(charts.numeric_columns(t))
    assert cols["Store"] == [134381.0, 12000.0]
    assert "Ratio" not in cols or cols["Ratio"][0] == 0.9


def test_charts_are_drawn_and_linked_once(tmp_path: Path) -> None:
    charts = _charts()
    (t,) = charts.tables(DOC)
    png = tmp_path / "store-ingest.png"
    assert charts.draw(t, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    linked = charts.link(DOC, [t])
    assert linked.count("![chart: Store ingest (bench/bench_store.py)](benchmarks/store-ingest.png)") == 1
    assert charts.link(linked, charts.tables(linked)) == linked  # idempotent


def test_every_benchmark_table_has_its_chart_in_the_docs() -> None:
    charts = _charts()
    text = (REPO / "docs" / "benchmarks.md").read_text()
    for t in charts.tables(text):
        if not charts.numeric_columns(t):
            continue
        ref = f"(benchmarks/{t.slug}.png)"
        assert ref in text, f"{t.heading}: run bench/charts.py --link"
        assert (REPO / "docs" / "benchmarks" / f"{t.slug}.png").exists()
