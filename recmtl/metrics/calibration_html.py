"""The report page's post-hoc calibration section (``report["calibration"]``, written by
``recmtl.metrics.calibrate.calibration_section``): a before/after table and, per task, one
reliability plot with both curves."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from recmtl.metrics.formatting import format_value
from recmtl.metrics.svg import Axes, nice_top

METRICS = (("auc", "AUC"), ("calibration", "p/y"), ("ece", "ECE"), ("logloss", "logloss"))
BEFORE, AFTER = "#7f7f7f", "#d62728"


def _curve(ax: Axes, bins: Sequence[Mapping[str, float]], color: str, dashed: bool) -> str:
    xs, ys = [b["predicted"] for b in bins], [b["observed"] for b in bins]
    return ax.line(xs, ys, color, dashed=dashed) + ax.points(xs, ys, color)


def reliability_before_after(task: str, before: Sequence[Mapping[str, float]] | None,
                             after: Sequence[Mapping[str, float]] | None) -> str:
    """Observed rate against mean predicted probability per equal-mass bin: before
    calibration dashed grey, after solid red, the diagonal where they should lie."""
    curves = [(bins, color, dashed) for bins, color, dashed in
              ((before, BEFORE, True), (after, AFTER, False)) if bins]
    if not curves:
        return ""
    top = max([b[k] for bins, _, _ in curves for b in bins for k in ("predicted", "observed")]
              + [1e-9])
    top = min(1.0, nice_top(top * 1.05))
    ax = Axes(0.0, top, 0.0, top)
    body = ax.line([0, top], [0, top], "#bbb", dashed=True)
    body += "".join(_curve(ax, bins, color, dashed) for bins, color, dashed in curves)
    legend = (f'<text x="{ax.left + 6}" y="{ax.top + 12}" font-size="10" fill="{BEFORE}">'
              f'- - before</text><text x="{ax.left + 6}" y="{ax.top + 24}" font-size="10" '
              f'fill="{AFTER}">&#8212; after</text>')
    return ax.frame(body + legend, title=f"{task}: calibration before / after",
                    xlabel="mean predicted probability", ylabel="observed rate",
                    kind="calibration-compare")


def calibration_html(section: Mapping[str, Any]) -> str:
    """``<section id="calibration">``: method and split, the table, the plots."""
    head = "".join(f"<th>{label} before</th><th>{label} after</th>" for _, label in METRICS)
    rows, plots = "", ""
    for name, t in section["tasks"].items():
        fit = t["fit"]
        what = (fit.get("calibrator") or fit.get("skipped")
                or "product of " + " x ".join(fit.get("product_of", [])))
        cells = "".join(f"<td>{format_value(t['before'][k])}</td><td>{format_value(t['after'][k])}"
                        "</td>" for k, _ in METRICS)
        rows += (f'<tr id="calibration-{html.escape(name)}"><td>{html.escape(name)}</td>'
                 f'<td class="text">{html.escape(str(what))}</td>{cells}</tr>')
        plots += reliability_before_after(name, t["before"]["reliability"],
                                          t["after"]["reliability"])
    knots = f", at most {section['max_knots']} knots" if section.get("max_knots") else ""
    return (f'<section id="calibration"><h2>Post-hoc calibration</h2>'
            f"<p>{html.escape(str(section['method']))} per task, fit on the "
            f"{html.escape(str(section['split']))} split{knots}; metrics on this report's rows. "
            "Composed tasks are the product of their calibrated parts. p/y is mean predicted "
            "over mean observed (1 is calibrated); ECE uses 10 equal-mass bins.</p>"
            f'<table><thead><tr><th>task</th><th class="text">calibrator</th>{head}</tr>'
            f"</thead><tbody>{rows}</tbody></table>{plots}</section>")
