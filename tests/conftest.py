"""Shared test fixtures: where the real data lives, and quiet, bounded torch threads."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

torch.set_num_threads(min(2, os.cpu_count() or 1))
# A chart that fails raises in tests (and in the CLI processes they start) instead of being
# left out of the report with a warning.
os.environ.setdefault("XREPORT_STRICT_FIGURES", "1")


def real_data_dir() -> Path | None:
    """$XREPORT_DATA_DIR, else ../shared/data beside the repo (absent on a fresh machine)."""
    for candidate in (os.environ.get("XREPORT_DATA_DIR"), REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "pneumoniamnist.npz").is_file():
            return Path(candidate)
    return None


@pytest.fixture
def pneumoniamnist_path() -> Path:
    folder = real_data_dir()
    if folder is None:
        pytest.skip("real data absent: put pneumoniamnist.npz in $XREPORT_DATA_DIR or ../shared/data")
    return folder / "pneumoniamnist.npz"
