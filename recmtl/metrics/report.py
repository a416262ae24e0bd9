"""Per-task evaluation report from collected predictions (see ``recmtl.predict``).

Schema (``report.json``)::

    {"rows": int,
     "tasks": {task: {"auc": float | null, "oracle_auc": float | null, "logloss": float,
                      "gauc": float | null, "gauc_groups": int, "gauc_excluded_groups": int,
                      "calibration": float | null, "ece": float, "ne": float | null,
                      "auc_ci95": [lo, hi] | null, "rows": int, "positives": int,
                      "space": str | null, "label": str,
                      "curves": {"roc": {"fpr": [...], "tpr": [...]},
                                 "reliability": [{"predicted", "observed", "rows"}, ...],
                                 "histogram": {"edges": [...], "counts": [...]}},
                      "slices": {column: [{"value": scalar | null, "rows": int,
                                           "positives": int, "auc": float | null}, ...,
                                          {"value": null, "other": int, "rows": int,
                                           "positives": int, "auc": float | null}]}}}}

``recmtl evaluate`` from a checkpoint adds ``"diagnostics"``: the expert-health summary of the
scoring pass (``recmtl.modules.diagnostics``): ``{"gates": {gate: {"mass": [G][E], "entropy":
[G], "rows": int}}, "experts": {block: {"nonpositive_share": [E]}}}``, and optionally ``"tasks":
[task, ...]``, the tasks with a tower in config order, which ``report.html`` names gate rows by.

With post-hoc calibration (``evaluate.calibration``), the tasks above score the calibrated
probabilities and ``"calibration"`` compares them with the model's own
(``recmtl.metrics.calibrate.calibration_section``): ``{"method", "split", "max_knots",
"tasks": {task: {"fit": {"rows", "positives", "calibrator" | "skipped"} | {"product_of"},
"before": {"auc", "calibration", "ece", "logloss", "reliability"}, "after": {...}}}}``.

A regression task (``kind: regression``) gets ``{"kind": "regression", "label", "space",
"rows", "rmse", "mae"}`` instead.

Each task is scored in its own sample space: CVR on clicked rows, CTR and CTCVR on all rows.
GAUC needs a ``group`` column (``features.group``); without one its fields are null/0.
``calibration`` is mean(p) / mean(y); ``ece`` uses 10 equal-mass bins; ``ne`` is logloss over
the base rate's entropy; ``auc_ci95`` is a Poisson-bootstrap percentile interval over rows
(``bootstrap`` resamples, 0 turns it off; see ``recmtl.metrics.bootstrap``).
``oracle_auc`` is the AUC of the true probabilities (composed tasks: the product of their
parts' oracles) when the data carries them, else null.
``slices`` (only with slice columns, ``evaluate.slices``): per column, AUC and volume per value
within the task's sample space, largest first; past ``max_slices`` values the rest are pooled
in a last entry with ``"value": null`` and ``"other"``: how many values it pools (a null value
in the data is an entry with ``"value": null`` and no ``"other"``).

Cost: every metric of a task reads off one sort of its scores (``recmtl.metrics.ranking``);
GAUC and each slice column add one integer sort, the oracle one more sort.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np

from recmtl.config import TaskConfig
from recmtl.metrics.auc import auc_from_ranking, logloss
from recmtl.metrics.bootstrap import interval_from_ranking
from recmtl.metrics.calibration import calibration_ratio, ece_from_ranking
from recmtl.metrics.curves import (
    entropy_of_rate,
    histogram_from_ranking,
    reliability_from_ranking,
    roc_from_ranking,
)
from recmtl.metrics.formatting import format_interval, format_value
from recmtl.metrics.gauc import gauc_from_ranking, group_codes
from recmtl.metrics.ranking import Ranking, rank
from recmtl.metrics.slices import SliceColumn, slice_table


def oracle_scores(task: TaskConfig, tasks: tuple[TaskConfig, ...],
                  cols: dict[str, np.ndarray]) -> np.ndarray | None:
    if task.oracle:
        return cols.get(task.oracle)
    if task.product_of:
        by_name = {t.name: t for t in tasks}
        parts = [oracle_scores(by_name[k], tasks, cols) for k in task.product_of]
        if all(p is not None for p in parts):
            return np.prod(np.stack(parts), axis=0)  # type: ignore[arg-type]
    return None


@contextmanager
def _lap(timings: dict[str, float] | None, part: str) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    if timings is not None:
        timings[part] = timings.get(part, 0.0) + time.perf_counter() - t0


def build_report(tasks: tuple[TaskConfig, ...], cols: dict[str, np.ndarray],
                 bootstrap: int = 200, slices: Mapping[str, SliceColumn] | None = None,
                 max_slices: int = 50, timings: dict[str, float] | None = None) -> dict[str, Any]:
    """The report of the module docstring. ``slices``: columns aligned with ``cols``' rows.
    A task without a ``pred/<task>`` column (a bundle that does not serve it) is left out.
    ``timings``, when given, accumulates seconds per part (rank, auc, gauc, bootstrap, ...)."""
    n = int(len(next(iter(cols.values()))))
    out: dict[str, Any] = {"rows": n, "tasks": {}}
    groups = group_codes(cols["group"]) if "group" in cols else None
    for t in tasks:
        if f"pred/{t.name}" not in cols:
            continue
        # Entire-space tasks use the columns as they are: no 10M-row mask copies.
        keep = cols[t.space] > 0.5 if t.space else None

        def own(x: np.ndarray, keep: np.ndarray | None = keep) -> np.ndarray:
            return x if keep is None else x[keep]

        y, p = own(cols[t.label]), own(cols[f"pred/{t.name}"])
        if t.kind == "regression":
            out["tasks"][t.name] = _regression_metrics(t, y, p)
            continue
        with _lap(timings, "rank"):
            r = rank(y, p)
        m: dict[str, Any] = {"label": t.label, "space": t.space, "rows": len(y),
                             "positives": int(r.positives)}
        with _lap(timings, "auc"):
            m["auc"] = auc_from_ranking(r)
        with _lap(timings, "oracle_auc"):
            oracle = oracle_scores(t, tasks, cols)
            m["oracle_auc"] = None if oracle is None else auc_from_ranking(rank(y, own(oracle)))
        with _lap(timings, "gauc"):
            grouped = gauc_from_ranking(y, r, own(groups)) if groups is not None and len(y) else None
        m |= {"gauc": grouped.gauc if grouped else None,
              "gauc_groups": grouped.groups_used if grouped else 0,
              "gauc_excluded_groups": grouped.groups_excluded if grouped else 0}
        with _lap(timings, "logloss"):
            m |= _probability_metrics(y, p)
        with _lap(timings, "ece"):
            m["ece"] = ece_from_ranking(r) if len(y) else None
        with _lap(timings, "bootstrap"):
            m["auc_ci95"] = interval_from_ranking(r, resamples=bootstrap)
        with _lap(timings, "curves"):
            m["curves"] = _curves(r)
        if slices:
            with _lap(timings, "slices"):
                m["slices"] = {name: slice_table(y, r, own(col.codes), col.values, max_slices)
                               for name, col in slices.items()}
        out["tasks"][t.name] = m
    return out


def _regression_metrics(t: TaskConfig, y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    err = p - y
    return {"kind": "regression", "label": t.label, "space": t.space, "rows": len(y),
            "rmse": float(np.sqrt(np.mean(err**2))) if len(y) else None,
            "mae": float(np.mean(np.abs(err))) if len(y) else None}


def _probability_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float | None]:
    if len(y) == 0:
        return {"logloss": None, "calibration": None, "ne": None}
    loss = logloss(y, p)
    base = entropy_of_rate(float(y.mean()))
    return {"logloss": loss, "calibration": calibration_ratio(y, p),
            "ne": None if base is None else loss / base}


def _curves(r: Ranking) -> dict[str, Any] | None:
    if r.positives == 0 or r.negatives == 0:
        return None
    fpr, tpr = roc_from_ranking(r)
    return {"roc": {"fpr": fpr.round(5).tolist(), "tpr": tpr.round(5).tolist()},
            "reliability": reliability_from_ranking(r), "histogram": histogram_from_ranking(r)}


def format_table(report: dict[str, Any]) -> str:
    """The report as a fixed-width table, one line per task (AUC with its 95% interval),
    then each task's slices."""
    f = format_value
    lines = [f"{'task':<8} {'space':<8} {'rows':>9} {'pos':>8} {'auc [95% interval]':<24} "
             f"{'oracle':>7} {'gap':>7} {'gauc':>7} {'logloss':>8} {'p/y':>6} {'ece':>7}"]
    for name, m in report["tasks"].items():
        if m.get("kind") == "regression":
            lines.append(f"{name:<8} {m['space'] or 'all':<8} {m['rows']:>9,} regression: "
                         f"rmse {f(m['rmse'])}, mae {f(m['mae'])}")
            continue
        gap = None if m["auc"] is None or m["oracle_auc"] is None else m["oracle_auc"] - m["auc"]
        auc = format_interval(m["auc"], m.get("auc_ci95"))
        lines.append(f"{name:<8} {m['space'] or 'all':<8} {m['rows']:>9,} {m['positives']:>8,} "
                     f"{auc:<24} {f(m['oracle_auc']):>7} {f(gap):>7} {f(m['gauc']):>7} "
                     f"{f(m['logloss']):>8} {f(m['calibration'])[:6]:>6} {f(m['ece']):>7}")
    for name, m in report["tasks"].items():
        for column, table in m.get("slices", {}).items():
            lines.append(f"{name} by {column}: " + ", ".join(
                f"{_slice_label(e)} {f(e['auc'])} ({e['rows']:,})" for e in table[:8])
                + (" ..." if len(table) > 8 else ""))
    return "\n".join(lines)


def _slice_label(entry: dict[str, Any]) -> str:
    return f"other({entry['other']})" if "other" in entry else str(entry["value"])
