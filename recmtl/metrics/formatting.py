"""How the reports print numbers: one place, so the table, report.html and compare.html agree.

Example:
    >>> format_interval(0.76694, [0.76331, 0.77062])
    '0.7669 [0.7633, 0.7706]'
    >>> format_interval(0.0036, [0.0012, 0.0061], signed=True)
    '+0.0036 [+0.0012, +0.0061]'
"""

from __future__ import annotations

from collections.abc import Sequence

DECIMALS = 4


def format_value(v: float | None, signed: bool = False) -> str:
    """``v`` to ``DECIMALS`` places (with its sign when ``signed``); ``-`` for None."""
    if v is None:
        return "-"
    return f"{v:+.{DECIMALS}f}" if signed else f"{v:.{DECIMALS}f}"


def format_interval(v: float | None, ci: Sequence[float] | None, signed: bool = False) -> str:
    """``value [lo, hi]``, each to ``DECIMALS`` places; the value alone when there is no
    interval (``ci`` None, e.g. the bootstrap was off)."""
    if v is None or not ci:
        return format_value(v, signed)
    lo, hi = ci
    return f"{format_value(v, signed)} [{format_value(lo, signed)}, {format_value(hi, signed)}]"
