"""Fixed settings of the farm training runs: seeds, years, split. Changing them changes the models."""

from __future__ import annotations

from pathlib import Path

SEED = 20261122
WEATHER_SEED = 7
YEARS = range(1991, 2031)  # 40 synthetic weather years (labels only; not real years)
SEASONS_PER_YEAR = 8
TRAIN_YEARS = range(1991, 2017)
VALIDATION_YEARS = range(2017, 2022)
TEST_YEARS = range(2022, 2031)

ROOT = Path(__file__).resolve().parents[3]
WORK_DIR = ROOT / "build" / "farm"  # intermediate files, not committed
FILES_DIR = ROOT / "models" / "files"
TESTSET_DIR = ROOT / "models" / "farm" / "testdata"


def split_of(year: int) -> str:
    """'train', 'validation' or 'test' for a weather year."""
    if year in TRAIN_YEARS:
        return "train"
    if year in VALIDATION_YEARS:
        return "validation"
    return "test"
