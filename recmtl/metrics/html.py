"""``report.json`` -> one self-contained HTML page: a metrics table and, per task, ROC,
reliability and score-histogram plots as inline SVG, a table per slice column, and the
expert-gate heatmaps when the report carries diagnostics (no scripts, no external files)."""

from __future__ import annotations

import html
from typing import Any

W, H, PAD = 280, 240, 34  # plot size and margin, px


def _xy(x: float, y: float, y_max: float = 1.0) -> tuple[float, float]:
    return PAD + x * (W - 2 * PAD), H - PAD - (y / y_max) * (H - 2 * PAD)


def _frame(title: str, xlabel: str, ylabel: str, body: str, kind: str) -> str:
    x0, y0 = _xy(0, 0)
    x1, y1 = _xy(1, 1)
    return (
        f'<svg class="plot {kind}" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        f'role="img" aria-label="{html.escape(title)}">'
        f'<title>{html.escape(title)}</title>'
        f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" fill="#fafafa" '
        f'stroke="#999"/>{body}'
        f'<text x="{W / 2}" y="14" text-anchor="middle" font-size="12">{html.escape(title)}</text>'
        f'<text x="{W / 2}" y="{H - 6}" text-anchor="middle" font-size="11">{xlabel}</text>'
        f'<text x="10" y="{H / 2}" font-size="11" transform="rotate(-90 10 {H / 2})" '
        f'text-anchor="middle">{ylabel}</text></svg>')


def _line(xs: list[float], ys: list[float], color: str, y_max: float = 1.0,
          dashed: bool = False) -> str:
    pts = " ".join("{:.1f},{:.1f}".format(*_xy(x, y, y_max)) for x, y in zip(xs, ys, strict=True))
    dash = ' stroke-dasharray="4 3"' if dashed else ""
    return f'<polyline fill="none" stroke="{color}" stroke-width="1.6"{dash} points="{pts}"/>'


def _roc(task: str, curves: dict[str, Any], auc: float | None) -> str:
    body = _line([0, 1], [0, 1], "#bbb", dashed=True)
    body += _line(curves["roc"]["fpr"], curves["roc"]["tpr"], "#1f77b4")
    label = f"{task}: ROC (AUC {auc:.4f})" if auc is not None else f"{task}: ROC"
    return _frame(label, "false positive rate", "true positive rate", body, "roc")


def _reliability(task: str, curves: dict[str, Any]) -> str:
    bins = curves["reliability"]
    top = max(max(b["predicted"] for b in bins), max(b["observed"] for b in bins), 1e-9)
    top = min(1.0, top * 1.1)
    xs = [b["predicted"] / top for b in bins]
    ys = [b["observed"] / top for b in bins]
    body = _line([0, 1], [0, 1], "#bbb", dashed=True) + _line(xs, ys, "#d62728")
    body += "".join('<circle cx="{:.1f}" cy="{:.1f}" r="2.5" fill="#d62728"/>'.format(
        *_xy(x, y)) for x, y in zip(xs, ys, strict=True))
    return _frame(f"{task}: calibration (axes to {top:.3f})", "mean predicted",
                  "observed rate", body, "calibration")


def _histogram(task: str, curves: dict[str, Any]) -> str:
    hist = curves["histogram"]
    top = max(hist["counts"]) or 1.0
    edges = hist["edges"]
    body = ""
    for lo, hi, count in zip(edges[:-1], edges[1:], hist["counts"], strict=True):
        x0, y0 = _xy(lo, count, top)
        x1, y1 = _xy(hi, 0, top)
        body += (f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{x1 - x0 - 1:.1f}" '
                 f'height="{y1 - y0:.1f}" fill="#2ca02c"/>')
    return _frame(f"{task}: score histogram", "predicted probability", "rows", body,
                  "histogram")


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return html.escape(str(v))


COLUMNS = ("space", "rows", "positives", "auc", "auc_ci95", "oracle_auc", "gauc", "logloss",
           "ne", "calibration", "ece")


def _slices(task: str, slices: dict[str, list[dict[str, Any]]]) -> str:
    """One table per slice column: value, rows, positives, AUC (the pooled rest last)."""
    out = ""
    for column, entries in slices.items():
        body = ""
        for e in entries:
            value = (f"other ({e['other']} values)" if "other" in e
                     else "null" if e["value"] is None else str(e["value"]))
            body += (f"<tr><td>{html.escape(value)}</td><td>{e['rows']:,}</td>"
                     f"<td>{e['positives']:,}</td><td>{_fmt(e['auc'])}</td></tr>")
        out += (f'<table class="slices" id="slices-{html.escape(task)}-{html.escape(column)}">'
                f"<caption>{html.escape(task)} by <code>{html.escape(column)}</code></caption>"
                f"<thead><tr><th>{html.escape(column)}</th><th>rows</th><th>positives</th>"
                f"<th>auc</th></tr></thead><tbody>{body}</tbody></table>")
    return out


def _gate_heatmaps(diagnostics: dict[str, Any]) -> str:
    """Per gate, rows (tasks) x experts shaded by mean gate weight; per expert block the
    share of non-positive outputs (dead ReLU units)."""
    out = ""
    cell = 34
    for name, gate in diagnostics.get("gates", {}).items():
        mass = gate["mass"]
        width, height = PAD + cell * len(mass[0]), 20 + cell * len(mass)
        body = ""
        for r, row in enumerate(mass):
            body += f'<text x="2" y="{20 + r * cell + cell / 2 + 4}" font-size="10">{r}</text>'
            for e, m in enumerate(row):
                x, y = PAD + e * cell, 20 + r * cell
                body += (f'<rect class="cell" x="{x}" y="{y}" width="{cell - 2}" '
                         f'height="{cell - 2}" fill="#1f77b4" fill-opacity="{min(max(m, 0), 1):.3f}"'
                         f' stroke="#ccc"/><text x="{x + 3}" y="{y + cell / 2 + 4}" '
                         f'font-size="9">{m:.2f}</text>')
        out += (f'<svg class="plot gates" xmlns="http://www.w3.org/2000/svg" width="{width}" '
                f'height="{height}" role="img" aria-label="gate {html.escape(name)}">'
                f"<title>gate {html.escape(name)}: mean weight per row (task) and expert"
                f'</title><text x="{PAD}" y="12" font-size="11">{html.escape(name)}</text>'
                f"{body}</svg>")
    rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{_fmt(e['nonpositive_share'])}</td></tr>"
                   for name, e in diagnostics.get("experts", {}).items())
    return (f'<section id="experts"><h2>Expert health</h2><p>Mean gate weight per row '
            f"(task) and expert; entropy and dead shares in report.json.</p>{out}"
            f"<table><thead><tr><th>experts</th><th>non-positive share per expert</th></tr>"
            f"</thead><tbody>{rows}</tbody></table></section>")


def render_html(report: dict[str, Any], title: str = "recmtl evaluation report") -> str:
    head = "".join(f"<th>{c}</th>" for c in ("task", *COLUMNS))
    rows = "".join(
        f'<tr id="row-{html.escape(name)}"><td>{html.escape(name)}</td>'
        + "".join(f"<td>{_fmt(m.get(c))}</td>" for c in COLUMNS) + "</tr>"
        for name, m in report["tasks"].items())
    sections = ""
    for name, m in report["tasks"].items():
        curves = m.get("curves")
        if m.get("kind") == "regression":
            plots = f"<p>regression: rmse {_fmt(m['rmse'])}, mae {_fmt(m['mae'])}</p>"
        elif not curves:
            plots = "<p>one class only: no curves</p>"
        else:
            plots = (_roc(name, curves, m.get("auc")) + _reliability(name, curves)
                     + _histogram(name, curves))
        sections += (f'<section id="task-{html.escape(name)}"><h2>{html.escape(name)}</h2>'
                     f"<p>label <code>{html.escape(str(m['label']))}</code>, sample space "
                     f"{html.escape(str(m['space'] or 'all rows'))}</p>{plots}"
                     f"{_slices(name, m.get('slices', {}))}</section>")
    meta = "".join(f"<li>{html.escape(k)}: {_fmt(report.get(k))}</li>"
                   for k in ("rows", "split", "checkpoint", "bundle", "data") if k in report)
    return (
        f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>"
        f"{html.escape(title)}</title><style>body{{font-family:sans-serif;margin:2em}}"
        f"table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;"
        f"text-align:right}}svg{{margin:4px}}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<ul>{meta}</ul><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
        f"{sections}{_gate_heatmaps(report['diagnostics']) if 'diagnostics' in report else ''}"
        f"</body></html>")
