"""Two runs' AUC on the same test rows: the delta (B - A) per task with a 95% interval.

Two methods, by what the runs left behind:

* ``paired_bootstrap``: both runs' per-row predictions (``predictions.parquet``) on the same
  rows in the same order. Each resample draws one Poisson(1) weight per row and applies it to
  both runs (see ``recmtl.metrics.bootstrap``), so noise from which rows happen to be in the
  test set moves both AUCs together and cancels in the delta; the interval is the percentile
  interval of the resampled deltas. Cost: O(rows) per resample (the two runs rank rows
  differently, so rows cannot be pooled into shared cells).
* ``independent``: reports only. Each run's ``auc_ci95`` is read as a half-width and the two
  are combined as if independent: ``delta +- sqrt(hw_a**2 + hw_b**2)``. On the same test rows
  the two AUCs are positively correlated, so this interval is wider than the paired one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from recmtl.metrics.bootstrap import Cells, poisson_cdf
from recmtl.metrics.ranking import check_scores, rank

PAIRED = "paired_bootstrap"
INDEPENDENT = "independent"


@dataclass(frozen=True)
class DeltaInterval:
    auc_a: float
    auc_b: float
    delta: float  # auc_b - auc_a
    lo: float
    hi: float
    method: str  # PAIRED or INDEPENDENT


def poisson_row_weights(n: int, rng: np.random.Generator) -> np.ndarray:
    """``[n]`` independent Poisson(1) weights (float64), by inverse CDF."""
    return np.searchsorted(poisson_cdf(1), rng.random(n), side="right").astype(np.float64)


def paired_auc_delta(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray,
                     resamples: int = 200, seed: int = 0, level: float = 0.95
                     ) -> DeltaInterval | None:
    """Paired Poisson-bootstrap interval of ``AUC(scores_b) - AUC(scores_a)``; None when a
    class is missing or no resample has both classes."""
    y, a = check_scores(labels, scores_a)
    _, b = check_scores(labels, scores_b)
    cells = [Cells(rank(y, s)) for s in (a, b)]
    row_cells = [c.row_cells() for c in cells]

    def aucs(weights: np.ndarray) -> tuple[float, float]:
        out = []
        for c, k in zip(cells, row_cells, strict=True):
            pos, neg = c.weight_sums(k, y, weights)
            out.append(float(c.auc(pos[None, :], neg[None, :])[0]))
        return out[0], out[1]

    auc_a, auc_b = aucs(np.ones(len(y)))
    if np.isnan(auc_a) or resamples <= 0:
        return None
    rng = np.random.default_rng(seed)
    deltas = np.array([db - da for da, db in (aucs(poisson_row_weights(len(y), rng))
                                              for _ in range(resamples))])
    deltas = deltas[~np.isnan(deltas)]
    if len(deltas) == 0:
        return None
    lo, hi = np.percentile(deltas, [50 * (1 - level), 50 * (1 + level)])
    return DeltaInterval(auc_a, auc_b, auc_b - auc_a, float(lo), float(hi), PAIRED)


def independent_delta(auc_a: float | None, ci_a: list[float] | None, auc_b: float | None,
                      ci_b: list[float] | None) -> DeltaInterval | None:
    """The delta with the two intervals' half-widths combined as independent; None when
    either run lacks its AUC or its interval."""
    if auc_a is None or auc_b is None or not ci_a or not ci_b:
        return None
    half = float(np.hypot((ci_a[1] - ci_a[0]) / 2, (ci_b[1] - ci_b[0]) / 2))
    delta = auc_b - auc_a
    return DeltaInterval(auc_a, auc_b, delta, delta - half, delta + half, INDEPENDENT)


def _paired_inputs(task: dict[str, Any], preds: dict[str, np.ndarray], name: str
                   ) -> tuple[np.ndarray, np.ndarray] | None:
    """``(labels, scores)`` of one task in its sample space, or None if a column is absent."""
    cols = [task["label"], f"pred/{name}"] + ([task["space"]] if task.get("space") else [])
    if any(c not in preds for c in cols):
        return None
    keep = preds[task["space"]] > 0.5 if task.get("space") else slice(None)
    return preds[task["label"]][keep], preds[f"pred/{name}"][keep]


def compare_reports(report_a: dict[str, Any], report_b: dict[str, Any],
                    preds_a: dict[str, np.ndarray] | None = None,
                    preds_b: dict[str, np.ndarray] | None = None,
                    resamples: int = 200, seed: int = 0) -> dict[str, Any]:
    """Per task present in both reports (binary tasks): AUCs, delta and its interval, paired
    where both runs' predictions cover the task on the same rows, independent otherwise.

    Returns ``{"tasks": {task: {"auc_a", "auc_b", "delta", "delta_ci95": [lo, hi] | None,
    "method": str | None, "rows": int}}, "notes": [str, ...]}``.
    """
    notes: list[str] = []
    tasks: dict[str, Any] = {}
    for name, ta in report_a["tasks"].items():
        tb = report_b["tasks"].get(name)
        if tb is None or "auc" not in ta or "auc" not in tb:
            continue
        paired = None
        if preds_a is not None and preds_b is not None:
            ia, ib = _paired_inputs(ta, preds_a, name), _paired_inputs(tb, preds_b, name)
            if ia is None or ib is None:
                notes.append(f"{name}: predictions lack the task's columns; not paired")
            elif len(ia[0]) != len(ib[0]) or not np.array_equal(ia[0], ib[0]):
                notes.append(f"{name}: the two runs' predictions are on different rows "
                             "(labels differ); not paired")
            else:
                paired = paired_auc_delta(ia[0], ia[1], ib[1], resamples, seed)
            if paired is not None:
                for run, got, auc in (("A", paired.auc_a, ta["auc"]), ("B", paired.auc_b, tb["auc"])):
                    if auc is not None and abs(got - auc) > 1e-9:
                        raise ValueError(f"{name}: run {run}'s predictions give AUC {got:.6f} but "
                                         f"its report says {auc:.6f}: they are not from one run")
        result = paired or independent_delta(ta["auc"], ta.get("auc_ci95"), tb["auc"],
                                             tb.get("auc_ci95"))
        entry: dict[str, Any] = {"auc_a": ta["auc"], "auc_b": tb["auc"], "rows": ta["rows"]}
        if result is None:
            entry |= {"delta": None if ta["auc"] is None or tb["auc"] is None
                      else tb["auc"] - ta["auc"], "delta_ci95": None, "method": None}
        else:
            d = asdict(result)
            entry |= {"delta": d["delta"], "delta_ci95": [d["lo"], d["hi"]],
                      "method": d["method"]}
        if ta["rows"] != tb["rows"]:
            notes.append(f"{name}: the runs were evaluated on different row counts "
                         f"({ta['rows']:,} vs {tb['rows']:,})")
        tasks[name] = entry
    if any(t["method"] == INDEPENDENT for t in tasks.values()):
        notes.append("independent: the two AUC intervals combined as if independent "
                     "(sqrt of summed squared half-widths); the runs share test rows, so this "
                     "is conservative. Save predictions (evaluate.save_predictions=true) in both "
                     "runs for a paired bootstrap.")
    return {"tasks": tasks, "notes": notes}
