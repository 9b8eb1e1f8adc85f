"""Fixtures for the farm model tests: the committed models in the real interpreter, the test sets."""

from __future__ import annotations

import re

import pytest

from models.farm.evaluation import TESTDATA, decode
from models.farm.source import MODEL_DIR
from models.registry import ModelRegistry

__all__ = ["TESTDATA", "card_table", "decode", "registry"]


@pytest.fixture(scope="session")
def registry() -> ModelRegistry:
    """The committed models, loaded (hash and tensors checked) in the runtime's interpreter."""
    return ModelRegistry(MODEL_DIR, num_threads=1)


def card_table(name: str) -> dict[str, dict[str, float]]:
    """Rows of the 'Held-out test' table in a model card: first column -> {column: value}."""
    text = (MODEL_DIR / f"{name}.md").read_text(encoding="utf-8")
    section = text.split("<!-- metrics -->")[1].split("<!-- /metrics -->")[0]
    lines = [ln.strip() for ln in section.splitlines() if ln.strip().startswith("|")]
    header = [c.strip().lower() for c in lines[0].strip("|").split("|")]
    rows = {}
    for ln in lines[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        rows[re.sub(r"\*", "", cells[0]).lower()] = {
            h: float(c) for h, c in zip(header[1:], cells[1:], strict=True) if re.fullmatch(r"[0-9.]+", c)
        }
    return rows
