"""How every number the documents print is written: the one rounding rule (``rounded``: half
up after dropping float noise), ``num``/``pct``/``ci``/``pval``/``signed``/``fmt`` and the dash
(``DASH``) of a missing value.
"""
from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal
from typing import Callable, Mapping, cast

from markupsafe import Markup, escape


DASH = "—"


def _is_missing(x: object) -> bool:
    return x is None or (isinstance(x, float) and not math.isfinite(x))


# Float noise below this many significant digits is dropped before rounding, so equal
# quantities computed two ways (189/240 as 0.7875 and as 0.7875000000000001) print the same.
NOISE_DIGITS = 12


def rounded(x: float, digits: int) -> Decimal:
    """``x`` to ``digits`` decimals, half away from zero, after dropping float noise:
    the one rounding rule of every number the documents print."""
    return Decimal(f"{x:.{NOISE_DIGITS}g}").quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)


def num(x: object, digits: int = 3) -> str:
    """0.91234 -> "0.912"; ints stay whole with thousands separators; None -> "—".

    A non-zero value that would round to zero is written as a bound, "< 0.001" (or
    "> -0.001"), never in scientific notation among fixed-point numbers."""
    if _is_missing(x):
        return DASH
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        value = rounded(x, digits)
        if x != 0 and value == 0:
            bound = f"{Decimal(1).scaleb(-digits):.{digits}f}"
            return f"< {bound}" if x > 0 else f"> -{bound}"
        return f"{value:.{digits}f}" if value != 0 else f"{0:.{digits}f}"
    return str(x)


def pct(x: object, digits: int = 1) -> str:
    """0.912 (or a metric value {"value": 0.912, ...}) -> "91.2%"."""
    if isinstance(x, Mapping):
        x = x.get("value")
    if _is_missing(x):
        return DASH
    return f"{rounded(100 * float(cast(float, x)), digits):.{digits}f}%"


def ci(v: object, digits: int = 3) -> str:
    """The interval of a metric value alone: "0.889–0.934", or "" when there is none."""
    if isinstance(v, Mapping) and v.get("ci95") and not any(_is_missing(b) for b in v["ci95"]):
        lo, hi = v["ci95"]
        return f"{num(float(lo), digits)}–{num(float(hi), digits)}"
    return ""


def pval(p: float | None) -> str:
    """A p-value for a table cell: "0.041" or "< 0.001" (three decimals, so 0.049 never
    reads as 0.05)."""
    if p is None or not math.isfinite(p):
        return DASH
    return "<\u00a00.001" if p < 0.001 else f"{p:.3f}"   # no line break inside "< 0.001"


def p_phrase(p: float | None) -> str:
    """A p-value for a sentence: "p = 0.041" or "p < 0.001"."""
    if p is None or not math.isfinite(p):
        return f"p = {DASH}"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def signed(x: float | None) -> str:
    """A difference with its sign, the minus typeset: "+0.012", "−0.034"."""
    if x is None or not math.isfinite(x):
        return DASH
    return f"{x:+.3f}".replace("-", "−")


def fmt(v: object, digits: int = 3, *, say: Callable[[object], str] | None = None) -> Markup:
    """A metric value for a table cell: "0.912 (0.889–0.934)", or "—" with the reason
    (a reason message is worded by ``say``, the template's language)."""
    if isinstance(v, Mapping):
        value = v.get("value")
        if _is_missing(value):
            reason = v.get("reason")
            if reason:
                text = say(reason) if say is not None and isinstance(reason, Mapping) else str(reason)
                return Markup('{}<span class="reason">{}</span>').format(DASH, f" ({text})")
            return Markup(DASH)
        interval = ci(v, digits)
        text = num(value, digits)
        if interval:
            return Markup('{} <span class="ci">({})</span>').format(text, interval)
        return Markup(escape(text))
    return Markup(escape(num(v, digits)))
