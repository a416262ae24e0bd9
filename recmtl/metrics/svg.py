"""Inline SVG plots for the HTML reports: axes with tick marks, tick values and axis labels;
lines, points and bars in data units. Each plot is one ``<svg>`` element, no scripts.

Example:
    >>> ax = Axes(0.0, 1.0, 0.0, 1.0)
    >>> svg = ax.frame(ax.line([0, 1], [0, 1], "#bbb"), title="diagonal", xlabel="x",
    ...                ylabel="y", kind="demo")
    >>> [t for t in ("0.0", "0.2", "1.0", ">x<", ">y<") if t not in svg]
    []
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

FONT = 'font-family="sans-serif"'


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round values covering ``[lo, hi]``: a step of 1, 2 or 5 x 10^k, the
    first tick at or below ``lo``, the last at or above ``hi``.

    >>> nice_ticks(0, 1)
    [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    >>> nice_ticks(0, 730)
    [0.0, 200.0, 400.0, 600.0, 800.0]
    """
    if not hi > lo:
        hi = lo + 1.0
    raw = (hi - lo) / count
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if raw <= m * mag * (1 + 1e-9))
    first = math.floor(lo / step + 1e-9)
    last = math.ceil(hi / step - 1e-9)
    return [round(k * step, 12) + 0.0 for k in range(first, last + 1)]


def tick_label(v: float, step: float) -> str:
    """``v`` with as many decimals as ``step`` needs; in thousands (``k``) or millions (``M``)
    when the step is that large.

    >>> tick_label(0.25, 0.05), tick_label(1500, 500), tick_label(4000, 2000), tick_label(0, 0.2)
    ('0.25', '1,500', '4k', '0.0')
    """
    if abs(v) < abs(step) * 1e-9:
        v = 0.0
    if v == 0 and abs(step) >= 1e3:
        return "0"
    if abs(step) >= 1e6:
        return f"{v / 1e6:g}M"
    if abs(step) >= 1e3:
        return f"{v / 1e3:g}k"
    decimals = max(0, -math.floor(math.log10(abs(step)) + 1e-9))
    return f"{v:,.{decimals}f}"


def default_ticks(lo: float, hi: float) -> list[tuple[float, str]]:
    """``nice_ticks`` inside ``[lo, hi]``, labelled."""
    ticks = nice_ticks(lo, hi)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    eps = (hi - lo) * 1e-9
    return [(t, tick_label(t, step)) for t in ticks if lo - eps <= t <= hi + eps]


def nice_top(top: float) -> float:
    """The first round tick at or above ``top`` (> 0): where an axis from 0 should end."""
    return nice_ticks(0.0, top)[-1] if top > 0 else 1.0


@dataclass(frozen=True)
class Axes:
    """A plot area: data ``[x_lo, x_hi] x [y_lo, y_hi]`` drawn in a ``width x height`` px
    image inside the margins (``left`` holds the y tick values and the y label)."""

    x_lo: float
    x_hi: float
    y_lo: float
    y_hi: float
    width: int = 320
    height: int = 260
    left: int = 58
    right: int = 16
    top: int = 26
    bottom: int = 44

    def px(self, x: float, y: float) -> tuple[float, float]:
        """Pixel position of data point ``(x, y)``."""
        fx = (x - self.x_lo) / ((self.x_hi - self.x_lo) or 1.0)
        fy = (y - self.y_lo) / ((self.y_hi - self.y_lo) or 1.0)
        return (self.left + fx * (self.width - self.left - self.right),
                self.height - self.bottom - fy * (self.height - self.top - self.bottom))

    def line(self, xs: Sequence[float], ys: Sequence[float], color: str,
             dashed: bool = False, width: float = 1.6) -> str:
        pts = " ".join("{:.1f},{:.1f}".format(*self.px(x, y)) for x, y in zip(xs, ys, strict=True))
        dash = ' stroke-dasharray="4 3"' if dashed else ""
        return (f'<polyline fill="none" stroke="{color}" stroke-width="{width}"{dash} '
                f'points="{pts}"/>')

    def points(self, xs: Sequence[float], ys: Sequence[float], color: str, r: float = 2.5) -> str:
        centres = (self.px(x, y) for x, y in zip(xs, ys, strict=True))
        return "".join(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r}" fill="{color}"/>'
                       for cx, cy in centres)

    def bar(self, x0: float, x1: float, y: float, color: str) -> str:
        """A bar from the x axis up to ``y`` over ``[x0, x1]``, 1 px apart from its neighbour."""
        (a, top), (b, bottom) = self.px(x0, y), self.px(x1, self.y_lo)
        return (f'<rect x="{a:.1f}" y="{top:.1f}" width="{max(b - a - 1, 0.5):.1f}" '
                f'height="{bottom - top:.1f}" fill="{color}"/>')

    def frame(self, body: str, *, title: str, xlabel: str, ylabel: str, kind: str,
              xticks: Sequence[tuple[float, str]] | None = None,
              yticks: Sequence[tuple[float, str]] | None = None) -> str:
        """The ``<svg>``: background, grid lines, tick marks and values on both axes, axis
        labels and title around ``body``. Ticks default to round values in the data range;
        pass ``(value, label)`` pairs for named ones (e.g. one per task)."""
        xticks = default_ticks(self.x_lo, self.x_hi) if xticks is None else xticks
        yticks = default_ticks(self.y_lo, self.y_hi) if yticks is None else yticks
        (x0, y0), (x1, y1) = self.px(self.x_lo, self.y_lo), self.px(self.x_hi, self.y_hi)
        grid, marks = "", ""
        for value, label in xticks:
            x, _ = self.px(value, self.y_lo)
            grid += f'<line x1="{x:.1f}" y1="{y1:.1f}" x2="{x:.1f}" y2="{y0:.1f}" stroke="#e6e6e6"/>'
            marks += (f'<line class="tick x" x1="{x:.1f}" y1="{y0:.1f}" x2="{x:.1f}" '
                      f'y2="{y0 + 4:.1f}" stroke="#555"/><text class="tick x" x="{x:.1f}" '
                      f'y="{y0 + 15:.1f}" text-anchor="middle" font-size="10">'
                      f"{html.escape(label)}</text>")
        for value, label in yticks:
            _, y = self.px(self.x_lo, value)
            grid += f'<line x1="{x0:.1f}" y1="{y:.1f}" x2="{x1:.1f}" y2="{y:.1f}" stroke="#e6e6e6"/>'
            marks += (f'<line class="tick y" x1="{x0 - 4:.1f}" y1="{y:.1f}" x2="{x0:.1f}" '
                      f'y2="{y:.1f}" stroke="#555"/><text class="tick y" x="{x0 - 6:.1f}" '
                      f'y="{y + 3.5:.1f}" text-anchor="end" font-size="10">'
                      f"{html.escape(label)}</text>")
        mid_x, mid_y = (x0 + x1) / 2, (y0 + y1) / 2
        return (
            f'<svg class="plot {kind}" xmlns="http://www.w3.org/2000/svg" width="{self.width}" '
            f'height="{self.height}" {FONT} role="img" aria-label="{html.escape(title)}">'
            f"<title>{html.escape(title)}</title>"
            f'<rect x="{x0:.1f}" y="{y1:.1f}" width="{x1 - x0:.1f}" height="{y0 - y1:.1f}" '
            f'fill="#fcfcfc"/>{grid}{body}'
            f'<rect x="{x0:.1f}" y="{y1:.1f}" width="{x1 - x0:.1f}" height="{y0 - y1:.1f}" '
            f'fill="none" stroke="#888"/>{marks}'
            f'<text class="title" x="{self.width / 2:.1f}" y="15" text-anchor="middle" '
            f'font-size="12">{html.escape(title)}</text>'
            f'<text class="label x" x="{mid_x:.1f}" y="{self.height - 8}" text-anchor="middle" '
            f'font-size="11">{html.escape(xlabel)}</text>'
            f'<text class="label y" x="12" y="{mid_y:.1f}" font-size="11" text-anchor="middle" '
            f'transform="rotate(-90 12 {mid_y:.1f})">{html.escape(ylabel)}</text></svg>')
