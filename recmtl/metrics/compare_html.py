"""``compare.json`` (``recmtl.metrics.compare``) -> one self-contained HTML page: per task
AUC A, AUC B and B - A with its 95% interval and how it was computed, and an interval plot
of B - A around 0 as inline SVG (no scripts, no external files)."""

from __future__ import annotations

import html
from typing import Any

from recmtl.metrics.compare import INDEPENDENT, PAIRED
from recmtl.metrics.formatting import format_interval, format_value
from recmtl.metrics.html import cell, page
from recmtl.metrics.svg import Axes, default_ticks, nice_ticks

METHODS = {PAIRED: "paired bootstrap", INDEPENDENT: "independent (conservative)",
           None: "no interval"}
COLORS = {PAIRED: "#1f77b4", INDEPENDENT: "#ff7f0e", None: "#777"}


def verdict(ci: list[float] | None) -> str:
    """What the interval says: which run is ahead, or that it cannot tell."""
    if not ci:
        return "-"
    if ci[0] > 0:
        return "B higher"
    if ci[1] < 0:
        return "A higher"
    return "no clear difference"


def delta_range(tasks: dict[str, Any]) -> tuple[float, float]:
    """The plot's x range: every delta, interval end and 0, widened to round ticks."""
    ends = [0.0]
    for t in tasks.values():
        ends += [v for v in (t["delta"], *(t["delta_ci95"] or ())) if v is not None]
    lo, hi = min(ends), max(ends)
    if hi - lo < 1e-4:  # all deltas (about) zero: still a readable axis
        lo, hi = lo - 1e-3, hi + 1e-3
    ticks = nice_ticks(lo, hi)
    return ticks[0], ticks[-1]


def interval_plot(tasks: dict[str, Any]) -> str:
    """One row per task: B - A as a dot, its interval as a bar with caps, a line at 0."""
    names = list(tasks)
    lo, hi = delta_range(tasks)
    row = 40
    left = 30 + 7 * max(len(n) for n in names)
    ax = Axes(lo, hi, 0.0, float(len(names)), width=max(640, left + 480),
              height=70 + row * len(names), left=left, top=26, bottom=44)
    body = ax.line([0.0, 0.0], [0.0, float(len(names))], "#444", dashed=True, width=1.2)
    yticks = []
    for i, name in enumerate(names):
        t, y = tasks[name], len(names) - i - 0.5
        yticks.append((y, name))
        color = COLORS.get(t["method"], "#777")
        if t["delta_ci95"]:
            a, b = t["delta_ci95"]
            body += ax.line([a, b], [y, y], color, width=3)
            for end in (a, b):
                body += ax.line([end, end], [y - 0.18, y + 0.18], color, width=1.6)
        if t["delta"] is not None:
            body += ax.points([t["delta"]], [y], color, r=4)
    return ax.frame(body, title="AUC B - AUC A per task, 95% interval",
                    xlabel="AUC B - AUC A (right of the dashed line: B higher)", ylabel="task",
                    kind="deltas", xticks=_signed(default_ticks(lo, hi)), yticks=yticks)


def _signed(ticks: list[tuple[float, str]]) -> list[tuple[float, str]]:
    return [(v, label if label.startswith("-") or v == 0 else f"+{label}") for v, label in ticks]


def render_compare_html(result: dict[str, Any], title: str = "recmtl compare") -> str:
    """The page for ``compare_reports``' result with the runs' sources (``a``, ``b``)."""
    rows = ""
    for name, t in result["tasks"].items():
        rows += (f'<tr id="row-{html.escape(name)}"><td>{html.escape(name)}</td>'
                 f"<td>{cell(t.get('rows'))}</td><td>{format_value(t['auc_a'])}</td>"
                 f"<td>{format_value(t['auc_b'])}</td>"
                 f'<td class="delta">{format_interval(t["delta"], t["delta_ci95"], signed=True)}'
                 f'</td><td class="method text">{METHODS.get(t["method"], str(t["method"]))}</td>'
                 f'<td class="text">{verdict(t["delta_ci95"])}</td></tr>')
    meta = "".join(f"<li>{label}: {html.escape(str(result[k]))}</li>"
                   for k, label in (("a", "A"), ("b", "B"), ("resamples", "bootstrap resamples"))
                   if k in result)
    legend = (f'<p><span style="color:{COLORS[PAIRED]}">&#9632;</span> paired bootstrap: both '
              f"runs' predictions on the same rows, resampled together. "
              f'<span style="color:{COLORS[INDEPENDENT]}">&#9632;</span> independent: the two '
              "reports' AUC intervals combined as if independent (wider than paired).</p>")
    plot = interval_plot(result["tasks"]) if result["tasks"] else "<p>no task in both runs</p>"
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in result.get("notes", []))
    head = ("<tr><th>task</th><th>rows</th><th>auc A</th><th>auc B</th>"
            '<th>B - A [95% interval]</th><th class="text">interval</th>'
            '<th class="text">verdict</th></tr>')
    notes_part = f'<h2>Notes</h2><ul class="notes">{notes}</ul>' if notes else ""
    return page(title, f"<ul>{meta}</ul><table><thead>{head}</thead><tbody>{rows}</tbody>"
                       f"</table>{legend}{plot}{notes_part}")
