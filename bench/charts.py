"""Draw the benchmark tables of docs/benchmarks.md as PNG charts, from the figures recorded there.

Nothing is measured again: every markdown table in the file becomes one PNG in
docs/benchmarks/ (one horizontal bar panel per numeric column, rows labelled by the first
column). ``--link`` also puts a reference to each chart under its table (idempotent).

    .venv/bin/python bench/charts.py [--link]
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "benchmarks.md"
OUT = REPO / "docs" / "benchmarks"
NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?|[-+]?\.\d+")
MAX_PANELS = 8
LABEL_CHARS = 48
# Tables whose rows are the measures and whose columns are the things compared: drawn transposed,
# one panel per measure.
TRANSPOSED = {"traffic"}


@dataclass
class Table:
    """One markdown table: the heading above it, its header row, its rows, the line it ends on."""

    heading: str
    header: list[str]
    rows: list[list[str]]
    end_line: int  # index of the table's last line in the file
    index: int  # tables under the same heading are numbered

    @property
    def slug(self) -> str:
        """File name of its chart."""
        plain = re.sub(r"\s*\([^)]*\)", "", self.heading)  # drop "(bench/x.py)", "(issue 4)"
        base = re.sub(r"[^a-z0-9]+", "-", plain.lower()).strip("-")[:40].strip("-") or "table"
        return f"{base}-{self.index}" if self.index else base


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def tables(text: str) -> list[Table]:
    """Every table of a markdown text, in order."""
    out: list[Table] = []
    lines = text.splitlines()
    heading = "benchmarks"
    counts: dict[str, int] = {}
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip().replace("`", "")
        if line.startswith("|") and i + 1 < len(lines) and re.match(r"^\|[-| :]+\|$", lines[i + 1].strip()):
            header = _cells(line)
            rows = []
            j = i + 2
            while j < len(lines) and lines[j].startswith("|"):
                rows.append(_cells(lines[j]))
                j += 1
            n = counts.get(heading, 0)
            counts[heading] = n + 1
            out.append(Table(heading, header, rows, j - 1, n))
            i = j
            continue
        i += 1
    return out


def number(cell: str) -> float:
    """The first number in a cell (``**134,381 readings/s**`` -> 134381.0), NaN when there is none."""
    clean = cell.replace("**", "").replace("\u2212", "-")
    m = NUMBER.search(clean)
    return float(m.group(0).replace(",", "")) if m else math.nan


def numeric_columns(t: Table) -> list[tuple[str, list[float]]]:
    """Columns after the first with a number in at least half of the rows."""
    out = []
    for c in range(1, len(t.header)):
        values = [number(r[c]) if c < len(r) else math.nan for r in t.rows]
        if sum(not math.isnan(v) for v in values) * 2 >= len(values) > 0:
            out.append((t.header[c].replace("**", "") or f"column {c}", values))
    return out[:MAX_PANELS]


def draw(t: Table, path: Path) -> bool:
    """Draw table ``t`` to ``path``; False when it has no numeric column."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = numeric_columns(t)
    if not cols:
        return False
    labels = [(r[0].replace("**", "").replace("`", "") or "-")[:LABEL_CHARS] for r in t.rows]
    if t.slug in TRANSPOSED:
        measures = [(label, [values[i] for _, values in cols]) for i, label in enumerate(labels)]
        labels = [name[:LABEL_CHARS] for name, _ in cols]
        cols = measures[:MAX_PANELS]
    height = 0.9 + 0.32 * len(labels)
    fig, axes = plt.subplots(
        1, len(cols), figsize=(3.2 * len(cols) + 3.0, height), squeeze=False, sharey=True
    )
    ys = list(range(len(labels)))
    for ax, (name, values) in zip(axes[0], cols, strict=True):
        shown = [0.0 if math.isnan(v) else v for v in values]
        bars = ax.barh(ys, shown, color="#2a9d8f")
        for bar, v in zip(bars, values, strict=True):
            text = "n/a" if math.isnan(v) else (f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}")
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, " " + text, va="center", fontsize=7)
        if max(shown, default=0.0) <= 0 and min(shown, default=0.0) >= 0:
            ax.set_xlim(0, 1)  # all zero (nothing lost, say): an empty panel with a sane axis
        ax.set_title(name[:40], fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.margins(x=0.25)
    axes[0][0].set_yticks(ys, labels, fontsize=7)
    axes[0][0].invert_yaxis()
    fig.suptitle(t.heading, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def link(text: str, drawn: list[Table]) -> str:
    """The markdown with ``![chart](benchmarks/<slug>.png)`` under each drawn table (once)."""
    lines = text.splitlines()
    for t in sorted(drawn, key=lambda t: t.end_line, reverse=True):
        ref = f"![chart: {t.heading}](benchmarks/{t.slug}.png)"
        nxt = lines[t.end_line + 1 : t.end_line + 3]
        if ref in nxt:
            continue
        lines[t.end_line + 1 : t.end_line + 1] = ["", ref]
    return "\n".join(lines) + "\n"


def main() -> int:
    """Draw every table; with ``--link`` reference the charts from the document."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--doc", type=Path, default=DOC)
    ap.add_argument("--out", type=Path, default=None, help="Directory of the PNGs (default: beside the doc).")
    ap.add_argument("--link", action="store_true", help="Reference each chart under its table.")
    args = ap.parse_args()
    text = args.doc.read_text(encoding="utf-8")
    out = args.out or args.doc.parent / "benchmarks"
    drawn = [t for t in tables(text) if draw(t, out / f"{t.slug}.png")]
    for t in drawn:
        print(f"{out / t.slug}.png  ({t.heading}: {len(t.rows)} rows)")
    if args.link:
        args.doc.write_text(link(text, drawn), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
