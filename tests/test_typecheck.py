"""mypy on the package, with the configuration in pyproject.toml ([tool.mypy]): 0 errors."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_mypy_finds_no_errors(tmp_path):
    api = pytest.importorskip("mypy.api", reason="mypy is not installed (pip install -e '.[test]')")
    cwd = os.getcwd()
    os.chdir(REPO)   # mypy reads pyproject.toml and resolves files = ["xreport"] from here
    try:
        stdout, stderr, status = api.run(["--cache-dir", str(tmp_path / "mypy-cache")])
    finally:
        os.chdir(cwd)
    errors = [line for line in stdout.splitlines() if ": error:" in line]
    assert status == 0 and not errors, "\n".join(errors[:40]) or stderr or stdout
