"""``report.json`` -> one self-contained HTML page: a metrics table and, per task, ROC,
reliability and score-histogram plots as inline SVG, a table per slice column, the post-hoc
calibration's before/after (``recmtl.metrics.calibration_html``) and the expert-gate heatmaps
when the report carries them (no scripts, no external files).

``page`` is the shell both report pages share (``recmtl.metrics.compare_html`` is the other);
plots come from ``recmtl.metrics.svg``, numbers from ``recmtl.metrics.formatting``.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from recmtl.metrics.calibration_html import calibration_html
from recmtl.metrics.formatting import format_interval, format_value
from recmtl.metrics.svg import FONT, Axes, nice_top

STYLE = ("body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;"
         "margin:0.5em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
         "td:first-child,th:first-child{text-align:left}svg{margin:4px;vertical-align:top}"
         "td.text,th.text{text-align:left}caption{text-align:left;padding:4px 0}")


def page(title: str, body: str) -> str:
    """A whole HTML document: ``title`` as its heading, then ``body``."""
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>'
            f"{html.escape(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>{body}</body></html>")


def cell(v: Any) -> str:
    """A table cell's text: numbers to 4 places, ints with thousands separators, escaped."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return "-" if v is None else html.escape(str(v))
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return format_value(v)
    if isinstance(v, list):
        return "[" + ", ".join(cell(x) for x in v) + "]"
    return html.escape(str(v))


def _roc(task: str, curves: dict[str, Any], auc: float | None) -> str:
    ax = Axes(0.0, 1.0, 0.0, 1.0)
    body = ax.line([0, 1], [0, 1], "#bbb", dashed=True)
    body += ax.line(curves["roc"]["fpr"], curves["roc"]["tpr"], "#1f77b4")
    label = f"{task}: ROC (AUC {format_value(auc)})" if auc is not None else f"{task}: ROC"
    return ax.frame(body, title=label, xlabel="false positive rate",
                    ylabel="true positive rate", kind="roc")


def _reliability(task: str, curves: dict[str, Any]) -> str:
    bins = curves["reliability"]
    top = max(max(b["predicted"] for b in bins), max(b["observed"] for b in bins), 1e-9)
    top = min(1.0, nice_top(top * 1.05))
    ax = Axes(0.0, top, 0.0, top)
    xs, ys = [b["predicted"] for b in bins], [b["observed"] for b in bins]
    body = ax.line([0, top], [0, top], "#bbb", dashed=True) + ax.line(xs, ys, "#d62728")
    body += ax.points(xs, ys, "#d62728")
    return ax.frame(body, title=f"{task}: calibration", xlabel="mean predicted probability",
                    ylabel="observed rate", kind="calibration")


def _histogram(task: str, curves: dict[str, Any]) -> str:
    hist = curves["histogram"]
    edges = hist["edges"]
    ax = Axes(edges[0], edges[-1], 0.0, nice_top(max(hist["counts"]) or 1.0))
    body = "".join(ax.bar(lo, hi, count, "#2ca02c")
                   for lo, hi, count in zip(edges[:-1], edges[1:], hist["counts"], strict=True))
    return ax.frame(body, title=f"{task}: score histogram", xlabel="predicted probability",
                    ylabel="rows", kind="histogram")


COLUMNS = ("space", "rows", "positives", "auc", "oracle_auc", "gauc", "logloss", "ne",
           "calibration", "ece")
HEADERS = {"auc": "auc [95% interval]"}


def _metric(m: dict[str, Any], column: str) -> str:
    if column == "auc":
        return format_interval(m.get("auc"), m.get("auc_ci95"))
    return cell(m.get(column))


def _slices(task: str, slices: dict[str, list[dict[str, Any]]]) -> str:
    """One table per slice column: value, rows, positives, AUC (the pooled rest last)."""
    out = ""
    for column, entries in slices.items():
        body = ""
        for e in entries:
            value = (f"other ({e['other']} values)" if "other" in e
                     else "null" if e["value"] is None else str(e["value"]))
            body += (f"<tr><td>{html.escape(value)}</td><td>{e['rows']:,}</td>"
                     f"<td>{e['positives']:,}</td><td>{cell(e['auc'])}</td></tr>")
        out += (f'<table class="slices" id="slices-{html.escape(task)}-{html.escape(column)}">'
                f"<caption>{html.escape(task)} by <code>{html.escape(column)}</code></caption>"
                f"<thead><tr><th>{html.escape(column)}</th><th>rows</th><th>positives</th>"
                f"<th>auc</th></tr></thead><tbody>{body}</tbody></table>")
    return out


def gate_row_names(gate: str, rows: int, tasks: Sequence[str] | None) -> list[str]:
    """Whom each row of a gate mixes experts for, read off the builder's module paths
    (``recmtl.models.builder``): MMoE's ``gate`` has one row per task; PLE's and AdaTT's
    ``levels.<l>.gates.<t>`` and HoME's ``task_gates.<t>`` one row for task t; HoME's
    ``group_gates.<c>`` one for task group c; ``shared_gate`` and ``global_gate`` one for the
    shared experts. ``tasks``: the tasks with a tower in config order (``Config.base_tasks``);
    without them, rows are numbered.

    >>> gate_row_names("gate", 2, ["ctr", "cvr"]), gate_row_names("levels.0.gates.1", 1, ["ctr", "cvr"])
    (['ctr', 'cvr'], ['cvr'])
    """
    parent, _, index = gate.rpartition(".")
    if rows == 1 and gate.endswith(("shared_gate", "global_gate")):
        return [index.removesuffix("_gate")]
    if rows == 1 and index.isdigit() and parent.endswith("group_gates"):
        return [f"group {index}"]
    if rows == 1 and tasks and index.isdigit() and parent.endswith("gates") \
            and int(index) < len(tasks):
        return [tasks[int(index)]]
    if tasks and rows == len(tasks):
        return list(tasks)
    return [f"row {r}" for r in range(rows)]


def _gate_heatmap(name: str, mass: list[list[float]], rows: list[str]) -> str:
    """Rows (named) x experts (e0, e1, ...), each cell shaded and labelled by its weight."""
    size, top = 34, 40
    left = 12 + 7 * max(len(r) for r in rows)
    width, height = left + size * len(mass[0]) + 8, top + size * len(mass) + 6
    body = "".join(f'<text class="expert" x="{left + e * size + size / 2 - 1}" y="{top - 5}" '
                   f'text-anchor="middle" font-size="10">e{e}</text>'
                   for e in range(len(mass[0])))
    for r, (row_name, row) in enumerate(zip(rows, mass, strict=True)):
        y = top + r * size
        body += (f'<text class="row" x="{left - 6}" y="{y + size / 2 + 3}" text-anchor="end" '
                 f'font-size="11">{html.escape(row_name)}</text>')
        for e, m in enumerate(row):
            x = left + e * size
            ink = "#fff" if m > 0.55 else "#222"
            body += (f'<rect class="cell" x="{x}" y="{y}" width="{size - 2}" height="{size - 2}" '
                     f'fill="#1f77b4" fill-opacity="{min(max(m, 0), 1):.3f}" stroke="#ccc"/>'
                     f'<text x="{x + size / 2 - 1}" y="{y + size / 2 + 3}" text-anchor="middle" '
                     f'font-size="9" fill="{ink}">{m:.2f}</text>')
    return (f'<svg class="plot gates" xmlns="http://www.w3.org/2000/svg" width="{width}" '
            f'height="{height}" {FONT} role="img" aria-label="gate {html.escape(name)}">'
            f"<title>gate {html.escape(name)}: mean weight per row and expert</title>"
            f'<text x="{left}" y="13" font-size="11">{html.escape(name)} (expert)</text>'
            f"{body}</svg>")


def _gate_heatmaps(diagnostics: dict[str, Any]) -> str:
    """Per gate, its rows (tasks, groups or the shared experts) x experts shaded by mean gate
    weight; per expert block the share of non-positive outputs (dead ReLU units)."""
    tasks = diagnostics.get("tasks")
    out = "".join(_gate_heatmap(name, g["mass"], gate_row_names(name, len(g["mass"]), tasks))
                  for name, g in diagnostics.get("gates", {}).items())
    rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{cell(e['nonpositive_share'])}</td></tr>"
                   for name, e in diagnostics.get("experts", {}).items())
    return (f'<section id="experts"><h2>Expert health</h2><p>Mean gate weight per row '
            f"and expert; entropy and dead shares in report.json.</p>{out}"
            f"<table><thead><tr><th>experts</th><th>non-positive share per expert</th></tr>"
            f"</thead><tbody>{rows}</tbody></table></section>")


def render_html(report: dict[str, Any], title: str = "recmtl evaluation report") -> str:
    head = "".join(f"<th>{HEADERS.get(c, c)}</th>" for c in ("task", *COLUMNS))
    rows = "".join(
        f'<tr id="row-{html.escape(name)}"><td>{html.escape(name)}</td>'
        + "".join(f"<td>{_metric(m, c)}</td>" for c in COLUMNS) + "</tr>"
        for name, m in report["tasks"].items())
    sections = ""
    for name, m in report["tasks"].items():
        curves = m.get("curves")
        if m.get("kind") == "regression":
            plots = f"<p>regression: rmse {cell(m['rmse'])}, mae {cell(m['mae'])}</p>"
        elif not curves:
            plots = "<p>one class only: no curves</p>"
        else:
            plots = (_roc(name, curves, m.get("auc")) + _reliability(name, curves)
                     + _histogram(name, curves))
        sections += (f'<section id="task-{html.escape(name)}"><h2>{html.escape(name)}</h2>'
                     f"<p>label <code>{html.escape(str(m['label']))}</code>, sample space "
                     f"{html.escape(str(m['space'] or 'all rows'))}</p>{plots}"
                     f"{_slices(name, m.get('slices', {}))}</section>")
    meta = "".join(f"<li>{html.escape(k)}: {cell(report.get(k))}</li>"
                   for k in ("rows", "split", "checkpoint", "bundle", "data") if k in report)
    gates = _gate_heatmaps(report["diagnostics"]) if "diagnostics" in report else ""
    calibration = calibration_html(report["calibration"]) if "calibration" in report else ""
    return page(title, f"<ul>{meta}</ul><table><thead><tr>{head}</tr></thead><tbody>{rows}"
                       f"</tbody></table>{calibration}{sections}{gates}")
