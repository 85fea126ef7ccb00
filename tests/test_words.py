"""Words follow the numbers (issue 20): rounding, verdict words, baselines, collapse,
calibration direction, limitations."""
from __future__ import annotations

import numpy as np
import pytest

from xreport import render


def test_equal_quantities_print_equal_and_no_scientific_notation() -> None:
    # 189/240 computed as a plain share and as a mean of recalls differs in the last bit.
    acc = 189 / 240
    bacc = float(np.mean([40 / 60, 40 / 60, 52 / 60, 57 / 60]))
    assert acc != bacc and abs(acc - bacc) < 1e-12
    assert render.num(acc) == render.num(bacc) == "0.788"
    assert render.num(0.7875) == render.num(0.7875000000000001)
    assert render.pct(0.14125) == render.pct(0.14125000000000001) == "14.1%"
    # Tiny values among 3-decimal numbers: a bound, never 9.47e-04 or 1.97e-05.
    assert render.num(1.97e-05) == "< 0.001" and render.num(-1.97e-05) == "> -0.001"
    assert render.num(9.47e-04) == "0.001" and render.num(0.0) == "0.000"
    assert "e-" not in render.num(3e-9, 5)
