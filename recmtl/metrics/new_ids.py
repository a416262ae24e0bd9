"""The new-id slice: rows whose id in some vocabulary feature is unknown to the model's data.

A vocabulary feature (``recmtl prepare``, transform ``vocab``) maps every value its
preparation did not keep to the OOV id 0: a value first seen after it (a new item), one below
``min_count``, or a null. Those rows all read the OOV row, so the report shows them apart:
slice ``new_ids`` (a row whose id is OOV in any single-valued vocabulary feature) and
``new_ids:<feature>`` per feature, each with values ``true`` / ``false`` (rows, positives and
AUC per task, in the task's sample space, as every slice). Histories (multi-valued features)
are left out: nearly every history holds some new item.

The masks come from the prepared ids (``masks_from_ids``: id == 0) or from raw rows through a
bundle's raw transforms (``recmtl.export.new_ids.new_id_masks``); both say the same thing of
the same rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from recmtl.config import TaskConfig
from recmtl.metrics.auc import auc_from_ranking
from recmtl.metrics.ranking import rank
from recmtl.metrics.slices import SliceColumn

ANY = "new_ids"
OOV_ID = 0


def new_id_features(transforms: Mapping[str, Any]) -> list[str]:
    """The single-valued vocabulary features of a ``transforms.json``, in its order."""
    return [f["name"] for f in transforms.get("sparse", [])
            if f.get("transform") == "vocab" and not f.get("multi_valued")]


def masks_from_ids(ids: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``{feature: bool [n]}``: the rows whose prepared id of that feature is the OOV id."""
    return {name: np.asarray(v) == OOV_ID for name, v in ids.items()}


def any_new(masks: Mapping[str, np.ndarray]) -> np.ndarray:
    """Rows new in at least one feature (``masks``: at least one, all of the same rows)."""
    stacked = np.stack([np.asarray(m, dtype=bool) for m in masks.values()])
    return np.asarray(stacked.any(axis=0))


def new_id_slices(masks: Mapping[str, np.ndarray]) -> dict[str, SliceColumn]:
    """The report's slice columns: ``new_ids`` and ``new_ids:<feature>``, valued False/True."""
    if not masks:
        return {}
    columns = {ANY: any_new(masks)} | {f"{ANY}:{name}": np.asarray(m, dtype=bool)
                                       for name, m in masks.items()}
    return {name: SliceColumn(m.astype(np.int64), (False, True)) for name, m in columns.items()}


def new_id_figures(tasks: tuple[TaskConfig, ...], cols: Mapping[str, np.ndarray],
                   masks: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """What the daily job reports of the new-id rows: ``{"rows": int, "share": float,
    "features": {feature: rows}, "tasks": {task: {"rows", "positives", "auc"}}}``, the tasks
    scored in their own sample spaces (``cols``: labels and ``pred/<task>``, as
    ``recmtl.metrics.report.build_report`` takes them). AUC is None when the new rows of a
    task hold one class only."""
    new = any_new(masks)
    out: dict[str, Any] = {"rows": int(new.sum()), "share": float(new.mean()) if len(new) else 0.0,
                           "features": {k: int(np.sum(m)) for k, m in masks.items()},
                           "tasks": {}}
    for t in tasks:
        if f"pred/{t.name}" not in cols or t.kind != "binary":
            continue
        keep = new & (np.asarray(cols[t.space]) > 0.5) if t.space else new
        r = rank(np.asarray(cols[t.label])[keep], np.asarray(cols[f"pred/{t.name}"])[keep])
        out["tasks"][t.name] = {"rows": int(keep.sum()), "positives": int(r.positives),
                                "auc": auc_from_ranking(r)}
    return out
