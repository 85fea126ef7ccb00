"""The hostile-case suite of bench/hostile_cli.py through the real CLI (one process per case):
one error line, exit 2, no traceback, the report folder built before it byte-identical."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import hostile_cli  # noqa: E402


def test_the_case_names_are_unique():
    names = [c.name for c in hostile_cli.CASES]
    assert len(names) == len(set(names)) and len(names) >= 20


@pytest.mark.slow
def test_every_hostile_case_ends_in_one_line_and_leaves_the_report_intact():
    results = hostile_cli.run()
    failed = [(r["case"], r["problems"], r["error"]) for r in results if not r["ok"]]
    assert not failed, failed
