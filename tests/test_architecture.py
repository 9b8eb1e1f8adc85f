"""The layering contract: folders import downward only (kernel <- drivers, sync, models <- control <- agent <- tools)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_no_import_runs_upward() -> None:
    """import-linter checks the contract in pyproject.toml; a new upward import fails here."""
    lint = Path(sys.executable).with_name("lint-imports")
    run = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "1 kept, 0 broken" in run.stdout


def test_kernel_imports_nothing_of_the_project() -> None:
    """The kernel stands alone: no module under kernel/ names another project package."""
    others = ("agent", "control", "drivers", "sync", "models", "hil", "provisioning", "firmware_tests")
    for path in (REPO / "kernel").glob("*.py"):
        for line in path.read_text(encoding="utf-8").splitlines():
            stripped = line.strip()
            if stripped.startswith(("from ", "import ")):
                root = stripped.split()[1].split(".")[0]
                assert root not in others, f"{path.name}: {stripped}"
