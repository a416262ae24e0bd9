"""Post-hoc calibration of a multi-task model from its predictions: fit, apply, compare.

``recmtl.predict.predict(..., logits=True)`` on the valid split gives each task's logits beside
its labels. ``fit_task_calibrators`` fits one calibrator per base binary task on the logits of
its own sample space (CVR on clicked rows, CTR on all rows; the float64 fits of
``recmtl.metrics.fit_calibration``) and composes each ``product_of`` task from its calibrated
parts (ESMM: ``p_ctcvr = p_ctr * p_cvr``), so calibrated CTCVR <= calibrated CTR on every row.
The result holds a ``TaskCalibrators`` module that the bundle exports after the dense ranker.

``calibrated_probabilities`` is what serving computes from the logits;
``calibrated_columns`` applies it to collected predictions (the test split);
``calibration_section`` puts a report's metrics before and after side by side.

Example:
    >>> from recmtl.config import TaskConfig
    >>> rng = np.random.default_rng(0)
    >>> logit = rng.normal(size=2000)
    >>> click = (rng.random(2000) < 1 / (1 + np.exp(-(0.5 * logit - 1)))).astype(float)
    >>> cols = {"logit/ctr": logit, "click": click}
    >>> fitted = fit_task_calibrators((TaskConfig("ctr", "click"),), cols, "platt")
    >>> fitted.tasks["ctr"]["calibrator"]  # the truth: 0.5 * logit - 1
    'platt: sigmoid(0.4812 * logit - 0.9852)'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from recmtl.config import TaskConfig
from recmtl.metrics.fit_calibration import fit_isotonic, fit_platt, fit_temperature_bias
from recmtl.metrics.formatting import format_value
from recmtl.modules.calibration import (
    IsotonicCalibrator,
    PlattCalibrator,
    TaskCalibrators,
    TemperatureCalibrator,
)

METHODS = ("isotonic", "platt", "temperature")
COMPARED = ("auc", "calibration", "ece", "logloss")  # the report metrics shown before and after


@dataclass(frozen=True)
class FittedCalibration:
    """Calibrators fit on one split, and what each fit saw.

    ``tasks``: per base binary task ``{"rows", "positives", "calibrator"}`` (a one-line
    summary), or ``{"rows", "positives", "skipped": why}`` when its fit was impossible (a
    single label value, constant logits): that task stays ``sigmoid(logit)``, and says so.
    """

    method: str
    split: str
    max_knots: int | None
    calibrators: TaskCalibrators
    tasks: dict[str, dict[str, Any]]

    def describe(self) -> dict[str, Any]:
        """JSON-able: the method, the fit per task and, under ``calibrators``, every
        calibrator's parameters (``TaskCalibrators.from_description`` reads them back)."""
        return {"method": self.method, "split": self.split, "max_knots": self.max_knots,
                "fit": self.tasks, "calibrators": self.calibrators.describe()}


def fit_calibrator(method: str, logits: np.ndarray, labels: np.ndarray,
                   max_knots: int | None = None) -> nn.Module:
    """One task's calibrator from its logits ``[N]`` and binary labels ``[N]``.
    Raises ``ValueError`` for an unknown method or data nothing can be fit to."""
    if method == "isotonic":
        return IsotonicCalibrator(*fit_isotonic(logits, labels, max_knots=max_knots))
    if method == "platt":
        return PlattCalibrator(*fit_platt(logits, labels))
    if method == "temperature":
        return TemperatureCalibrator(*fit_temperature_bias(logits, labels))
    raise ValueError(f"unknown calibration method {method!r}; expected one of {METHODS}")


def _summary(calibrator: nn.Module) -> str:
    d = calibrator.describe()  # type: ignore[operator]
    if d["kind"] == "isotonic":
        return f"isotonic: {len(d['x_knots'])} knots over logits [{d['x_knots'][0]:.3f}, " \
               f"{d['x_knots'][-1]:.3f}] -> p [{d['y_knots'][0]:.4f}, {d['y_knots'][-1]:.4f}]"
    a, b = (d["a"], d["b"]) if d["kind"] == "platt" else (d["scale"], d["bias"])
    return f"{d['kind']}: sigmoid({a:.4f} * logit {'-' if b < 0 else '+'} {abs(b):.4f})"


def fit_task_calibrators(tasks: tuple[TaskConfig, ...], cols: Mapping[str, np.ndarray],
                         method: str, max_knots: int | None = None,
                         split: str = "valid") -> FittedCalibration:
    """Calibrators for every base binary task from ``cols`` (``predict(..., logits=True)``:
    ``logit/<task>`` and the label and space columns); composed tasks take the product of
    their calibrated parts; regression tasks are left alone."""
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; expected one of {METHODS}")
    modules: dict[str, nn.Module | None] = {}
    info: dict[str, dict[str, Any]] = {}
    for t in tasks:
        if t.kind != "binary" or t.product_of:
            continue
        keep = cols[t.space] > 0.5 if t.space else np.ones(len(cols[t.label]), dtype=bool)
        logits, labels = cols[f"logit/{t.name}"][keep], cols[t.label][keep]
        info[t.name] = {"rows": int(len(labels)), "positives": int(labels.sum())}
        try:
            modules[t.name] = fit_calibrator(method, logits, labels, max_knots)
        except ValueError as e:
            modules[t.name] = None
            info[t.name]["skipped"] = f"left uncalibrated: {e}"
            continue
        info[t.name]["calibrator"] = _summary(modules[t.name])  # type: ignore[arg-type]
    products = {t.name: list(t.product_of) for t in tasks if t.product_of and t.kind == "binary"}
    return FittedCalibration(method, split, max_knots if method == "isotonic" else None,
                             TaskCalibrators(modules, products), info)


def calibrated_probabilities(logits: Mapping[str, torch.Tensor], tasks: tuple[TaskConfig, ...],
                             calibrators: TaskCalibrators) -> dict[str, torch.Tensor]:
    """``{task: p [B]}`` like ``recmtl.losses.task_probabilities``, with each binary task's
    probability calibrated (composed tasks: the product of the calibrated parts); a
    regression task's value passes through."""
    probs = calibrators({name: logits[name] for name in calibrators.base})
    return {t.name: logits[t.name] if t.kind == "regression" else probs[t.name] for t in tasks}


@torch.no_grad()
def calibrated_columns(cols: Mapping[str, np.ndarray], tasks: tuple[TaskConfig, ...],
                       calibrators: TaskCalibrators, chunk: int = 1 << 16
                       ) -> dict[str, np.ndarray]:
    """``cols`` with each ``pred/<task>`` replaced by the calibrated probability, computed
    from the ``logit/<task>`` columns in float32 as the bundle does (``chunk`` rows at a time:
    isotonic calibrators compare every row with every knot)."""
    names = calibrators.base
    n = len(cols[f"logit/{names[0]}"])
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, n, chunk):
        logits = {name: torch.from_numpy(cols[f"logit/{name}"][start:start + chunk]).float()
                  for name in names}
        logits |= {t.name: torch.from_numpy(cols[f"logit/{t.name}"][start:start + chunk]).float()
                   for t in tasks if t.kind == "regression"}
        for name, p in calibrated_probabilities(logits, tasks, calibrators).items():
            parts.setdefault(name, []).append(p.double().numpy())
    return dict(cols) | {f"pred/{name}": np.concatenate(p) for name, p in parts.items()}


def _compared(m: Mapping[str, Any]) -> dict[str, Any]:
    curves = m.get("curves") or {}
    return {k: m.get(k) for k in COMPARED} | {"reliability": curves.get("reliability")}


def calibration_section(before: Mapping[str, Any], after: Mapping[str, Any],
                        fitted: FittedCalibration) -> dict[str, Any]:
    """``report["calibration"]``: the fit (method, split, per task rows and calibrator) and,
    per binary task of both reports, ``before`` and ``after``: AUC, p/y (``calibration``),
    ECE, logloss and the reliability bins."""
    tasks: dict[str, Any] = {}
    for name, m in after["tasks"].items():
        if m.get("kind") == "regression" or name not in before["tasks"]:
            continue
        fit = fitted.tasks.get(name) or {"product_of": fitted.calibrators.products.get(name, [])}
        tasks[name] = {"fit": fit, "before": _compared(before["tasks"][name]),
                       "after": _compared(m)}
    return {"method": fitted.method, "split": fitted.split, "max_knots": fitted.max_knots,
            "tasks": tasks}


def format_calibration(section: Mapping[str, Any]) -> str:
    """The section as lines, one per task: each compared metric as ``before -> after``."""
    f = format_value
    lines = [f"calibration ({section['method']}, fit on {section['split']}): before -> after"]
    for name, t in section["tasks"].items():
        b, a = t["before"], t["after"]
        lines.append(f"{name:<8} " + "  ".join(
            f"{label} {f(b[k])} -> {f(a[k])}" for k, label in
            (("auc", "auc"), ("calibration", "p/y"), ("ece", "ece"), ("logloss", "logloss"))))
        if "skipped" in t["fit"]:
            lines.append(f"{'':<8} {t['fit']['skipped']}")
    return "\n".join(lines)
