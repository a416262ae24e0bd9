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
                                 "histogram": {"edges": [...], "counts": [...]}}}}}

Each task is scored in its own sample space: CVR on clicked rows, CTR and CTCVR on all rows.
GAUC needs a ``group`` column (``features.group``); without one its fields are null/0.
``calibration`` is mean(p) / mean(y); ``ece`` uses 10 equal-mass bins; ``ne`` is logloss over
the base rate's entropy; ``auc_ci95`` is a percentile bootstrap over rows (``bootstrap``
resamples; 0 turns it off).
``oracle_auc`` is the AUC of the true probabilities (composed tasks: the product of their
parts' oracles) when the data carries them, else null.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from recmtl.config import TaskConfig
from recmtl.metrics.auc import auc, logloss
from recmtl.metrics.calibration import calibration_ratio, ece_equal_mass
from recmtl.metrics.curves import (
    auc_interval,
    histogram,
    normalized_entropy,
    reliability_bins,
    roc_points,
)
from recmtl.metrics.gauc import gauc


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


def build_report(tasks: tuple[TaskConfig, ...], cols: dict[str, np.ndarray],
                 bootstrap: int = 200) -> dict[str, Any]:
    out: dict[str, Any] = {"rows": int(len(next(iter(cols.values())))), "tasks": {}}
    for t in tasks:
        keep = cols[t.space] > 0.5 if t.space else np.ones(out["rows"], dtype=bool)
        y = cols[t.label][keep]
        p = cols[f"pred/{t.name}"][keep]
        oracle = oracle_scores(t, tasks, cols)
        grouped = gauc(y, p, cols["group"][keep]) if "group" in cols and len(y) else None
        out["tasks"][t.name] = {
            "label": t.label,
            "space": t.space,
            "rows": int(keep.sum()),
            "positives": int(y.sum()),
            "auc": auc(y, p),
            "oracle_auc": None if oracle is None else auc(y, oracle[keep]),
            "logloss": logloss(y, p) if len(y) else None,
            "gauc": grouped.gauc if grouped else None,
            "gauc_groups": grouped.groups_used if grouped else 0,
            "gauc_excluded_groups": grouped.groups_excluded if grouped else 0,
            "calibration": calibration_ratio(y, p) if len(y) else None,
            "ece": ece_equal_mass(y, p) if len(y) else None,
            "ne": normalized_entropy(y, p) if len(y) else None,
            "auc_ci95": auc_interval(y, p, resamples=bootstrap),
            "curves": _curves(y, p),
        }
    return out


def _curves(y: np.ndarray, p: np.ndarray) -> dict[str, Any] | None:
    if len(y) == 0 or y.min() == y.max():
        return None
    fpr, tpr = roc_points(y, p)
    return {"roc": {"fpr": fpr.round(5).tolist(), "tpr": tpr.round(5).tolist()},
            "reliability": reliability_bins(y, p), "histogram": histogram(p)}


def format_table(report: dict[str, Any]) -> str:
    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.4f}"

    lines = [f"{'task':<8} {'space':<8} {'rows':>9} {'pos':>8} {'auc':>7} {'oracle':>7} "
             f"{'gap':>7} {'gauc':>7} {'logloss':>8} {'p/y':>6} {'ece':>7}"]
    for name, m in report["tasks"].items():
        gap = None if m["auc"] is None or m["oracle_auc"] is None else m["oracle_auc"] - m["auc"]
        lines.append(f"{name:<8} {m['space'] or 'all':<8} {m['rows']:>9,} {m['positives']:>8,} "
                     f"{f(m['auc']):>7} {f(m['oracle_auc']):>7} {f(gap):>7} {f(m['gauc']):>7} "
                     f"{f(m['logloss']):>8} {f(m['calibration'])[:6]:>6} {f(m['ece']):>7}")
    return "\n".join(lines)
