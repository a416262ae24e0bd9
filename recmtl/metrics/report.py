"""Per-task evaluation report from collected predictions (see ``recmtl.predict``).

Schema (``report.json``)::

    {"rows": int,
     "tasks": {task: {"auc": float | null, "oracle_auc": float | null, "logloss": float,
                      "rows": int, "positives": int, "space": str | null, "label": str}}}

Each task is scored in its own sample space: CVR on clicked rows, CTR and CTCVR on all rows.
``oracle_auc`` is the AUC of the true probabilities (composed tasks: the product of their
parts' oracles) when the data carries them, else null.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from recmtl.config import TaskConfig
from recmtl.metrics.auc import auc, logloss


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


def build_report(tasks: tuple[TaskConfig, ...], cols: dict[str, np.ndarray]) -> dict[str, Any]:
    out: dict[str, Any] = {"rows": int(len(next(iter(cols.values())))), "tasks": {}}
    for t in tasks:
        keep = cols[t.space] > 0.5 if t.space else np.ones(out["rows"], dtype=bool)
        y = cols[t.label][keep]
        p = cols[f"pred/{t.name}"][keep]
        oracle = oracle_scores(t, tasks, cols)
        out["tasks"][t.name] = {
            "label": t.label,
            "space": t.space,
            "rows": int(keep.sum()),
            "positives": int(y.sum()),
            "auc": auc(y, p),
            "oracle_auc": None if oracle is None else auc(y, oracle[keep]),
            "logloss": logloss(y, p) if len(y) else None,
        }
    return out


def format_table(report: dict[str, Any]) -> str:
    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.4f}"

    lines = [f"{'task':<8} {'space':<8} {'rows':>9} {'pos':>8} {'auc':>7} {'oracle':>7} "
             f"{'gap':>7} {'logloss':>8}"]
    for name, m in report["tasks"].items():
        gap = None if m["auc"] is None or m["oracle_auc"] is None else m["oracle_auc"] - m["auc"]
        lines.append(f"{name:<8} {m['space'] or 'all':<8} {m['rows']:>9,} {m['positives']:>8,} "
                     f"{f(m['auc']):>7} {f(m['oracle_auc']):>7} {f(gap):>7} {f(m['logloss']):>8}")
    return "\n".join(lines)
