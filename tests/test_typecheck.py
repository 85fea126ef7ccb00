"""mypy on the package, with the configuration in pyproject.toml ([tool.mypy]): 0 errors.

Slow: a first run reads torch's and numpy's stubs (minutes on 2 cores); later runs use
.mypy_cache and take seconds. CI (`.ci/run`) runs it with the rest of the suite.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_mypy_finds_no_errors():
    api = pytest.importorskip("mypy.api", reason="mypy is not installed (pip install -e '.[test]')")
    cwd = os.getcwd()
    os.chdir(REPO)   # mypy reads pyproject.toml and resolves files = ["xreport"] from here
    try:
        stdout, stderr, status = api.run([])
    finally:
        os.chdir(cwd)
    errors = [line for line in stdout.splitlines() if ": error:" in line]
    assert status == 0 and not errors, "\n".join(errors[:40]) or stderr or stdout
