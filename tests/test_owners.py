"""One owner for each small concept: the missing-value dash, the split names, the
faithfulness score names, and the task of a checkpoint meta that predates the task key."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from xreport import artifacts, explain, report, runs
from xreport.data import base

PACKAGE = Path(__file__).resolve().parents[1] / "xreport"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "checkpoints"


def _literals(owner: str) -> list[tuple[str, int, object]]:
    """Every string and tuple-of-strings constant in the package's code but ``owner``'s."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).as_posix() == owner:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.append((path.name, node.lineno, node.value))
            elif isinstance(node, ast.Tuple) and all(isinstance(e, ast.Constant) for e in node.elts):
                found.append((path.name, node.lineno, tuple(e.value for e in node.elts)))  # type: ignore[attr-defined]
    return found


def test_the_dash_for_a_missing_value_is_render_DASH():
    # A lone dash, or one closing a short text ("p = —"); docstrings may mention it.
    stray = [(f, n) for f, n, v in _literals("render/numbers.py")
             if isinstance(v, str) and v.strip() in ("—", "p = —")]
    assert not stray, stray


def test_the_split_names_are_spelled_once():
    stray = [(f, n) for f, n, v in _literals("data/base.py")
             if v in (base.SPLITS, base.REPORT_SPLITS, ("train", "val", "test"), ("test", "val"))]
    assert not stray, stray


def test_the_faithfulness_scores_have_one_list():
    assert tuple(explain.FAITH_SCORES) == artifacts.FAITH_SCORES == report.FAITH_ROWS
    stray = [(f, n) for f, n, v in _literals("artifacts.py") if v == artifacts.FAITH_SCORES]
    assert not stray, stray


@pytest.mark.parametrize("classes, task", [(["a", "b"], "binary"), (["a", "b", "c"], "multiclass")])
def test_a_meta_without_a_task_reads_one_way_everywhere(classes, task):
    raw = dict(runs.load_checkpoint(FIXTURES / "fixture_3class" / "best.pt").meta)
    raw.pop("task", None)
    raw.update(num_classes=len(classes), class_names=classes)
    meta = artifacts.check_checkpoint_meta(raw, path=Path("old.pt"))
    assert meta["task"] == task
    # The report's summary reads the same task as evaluate when there are no metrics.
    evaluation = {"data": {"n": 3}}
    summary = report._summary(meta, None, evaluation, "phantom")  # type: ignore[arg-type]
    assert summary["task"] == task



def test_the_p_value_and_signed_formats_are_render_s():
    from xreport import compare, render

    assert (compare.p_text, compare.format_p, compare._signed) == (render.pval, render.p_phrase, render.signed)
    assert [render.pval(p) for p in (0.0492, 0.0004, None)] == ["0.049", "<\u00a00.001", "—"]
    assert render.signed(-0.0341) == "−0.034" and render.p_phrase(0.0004) == "p < 0.001"
