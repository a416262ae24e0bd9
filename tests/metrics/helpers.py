"""Shared test data for the report tests."""

import numpy as np

from recmtl.config import TaskConfig
from recmtl.metrics.report import build_report

FUNNEL = (TaskConfig("ctr", "click"), TaskConfig("cvr", "conversion", space="click"),
          TaskConfig("ctcvr", "conversion", product_of=("ctr", "cvr")))


def funnel_report(n=3000, groups=50, bootstrap=50):
    """A report of random click/conversion predictions for the three funnel tasks."""
    rng = np.random.default_rng(0)
    click = (rng.random(n) < 0.2).astype(float)
    conv = click * (rng.random(n) < 0.3)
    cols = {"click": click, "conversion": conv, "group": rng.integers(0, groups, n).astype(float),
            "pred/ctr": np.clip(0.2 + 0.1 * click + 0.05 * rng.normal(size=n), 0.01, 0.99),
            "pred/cvr": rng.random(n)}
    cols["pred/ctcvr"] = cols["pred/ctr"] * cols["pred/cvr"]
    return build_report(FUNNEL, cols, bootstrap=bootstrap)
