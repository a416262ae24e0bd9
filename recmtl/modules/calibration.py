"""Exportable per-task calibrators: logits ``[B]`` in, calibrated probabilities ``[B]`` out.

Every calibrator takes the task's raw logit, so one convention covers all kinds:

- ``IdentityCalibrator``: ``sigmoid(logit)`` (an uncalibrated task).
- ``IsotonicCalibrator``: knots in logit space (``recmtl.metrics.fit_calibration.
  fit_isotonic`` on the model's logits), linear interpolation between knots, clipped past
  the ends. No ``searchsorted``: the segment is a count of knots at or below the logit and a
  gather, both plain ONNX ops. The knots read the logit itself, not ``sigmoid(logit)``:
  isotonic curves have near-vertical segments, and runtimes' sigmoids differ by an ulp,
  which such a segment would turn into a visible difference between torch and ONNX.
- ``PlattCalibrator`` / ``TemperatureCalibrator``: ``sigmoid(a * logit + b)``, from
  ``fit_platt`` / ``fit_temperature_bias``.

Parameters are float32 registered buffers, so ``state_dict`` round-trips and
``torch.export`` / ONNX see constants. ``describe()`` gives a JSON-able
``{"kind": ..., params}``; ``calibrator_from_description`` rebuilds the same buffers.

Composed tasks (``p_ctcvr = p_ctr * p_cvr``) have no logit of their own. Their calibrated
probability must stay consistent with their components: calibrated CTCVR <= calibrated CTR
(and <= calibrated CVR), as for true probabilities. ``calibrate_composed`` enforces it:
the product of the calibrated components by default, or a directly calibrated CTCVR capped
by its components.

Example:
    >>> import torch
    >>> cal = IsotonicCalibrator([-2.0, 0.0, 2.0], [0.1, 0.3, 0.9])
    >>> cal(torch.tensor([-10.0, -1.0, 1.0, 10.0]))
    tensor([0.1000, 0.2000, 0.6000, 0.9000])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, cast

import numpy as np
import torch
from torch import nn


class Calibrator(Protocol):
    """What ``TaskCalibrators`` holds: ``logit [B] -> p [B]`` plus a JSON-able description."""

    def __call__(self, logit: torch.Tensor) -> torch.Tensor: ...

    def describe(self) -> dict[str, Any]: ...


def _float32(name: str, values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Values rounded to float32, held as float64 so derived buffers match a rebuild."""
    a = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} has NaN or infinite values")
    return a.astype(np.float32).astype(np.float64)


class IdentityCalibrator(nn.Module):
    """``logit [B] -> sigmoid(logit) [B]``: a task left uncalibrated."""

    def forward(self, logit: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logit)

    def describe(self) -> dict[str, Any]:
        return {"kind": "identity"}


class IsotonicCalibrator(nn.Module):
    """``logit [B] -> interp(logit, x_knots, y_knots) [B]``, clipped at the ends.

    Equals ``np.interp(logit, x_knots, y_knots)``. With ``k`` the last knot at or below
    ``l``: ``y_k + (y_{k+1} - y_k) * clamp((l - x_k) / (x_{k+1} - x_k), 0, 1)``, capped at
    ``y_{k+1}``. Each segment stays within its own knots' values, so the output is exactly
    monotone in float32, steep segments included.

    Args:
        x_knots: ``[K]`` logits, nondecreasing: ``fit_isotonic(logits, labels)``. Fits give
            strictly increasing knots; repeated ones (also knots that collide in float32)
            make a step, right-continuous.
        y_knots: ``[K]`` calibrated probabilities in [0, 1], nondecreasing.
    """

    x_knots: torch.Tensor  # [K]
    y_knots: torch.Tensor  # [K]
    y_next: torch.Tensor  # [K]: y of the following knot (the last knot repeats itself)
    inverse_width: torch.Tensor  # [K]: 1 / (x_{k+1} - x_k), 0 for an empty segment

    def __init__(self, x_knots: Sequence[float] | np.ndarray,
                 y_knots: Sequence[float] | np.ndarray) -> None:
        super().__init__()
        x, y = _float32("x_knots", x_knots), _float32("y_knots", y_knots)
        if x.ndim != 1 or x.shape != y.shape or len(x) == 0:
            raise ValueError(f"knots must be two 1-D arrays of one length >= 1, got "
                             f"{x.shape} and {y.shape}")
        if np.any(np.diff(np.asarray(x_knots, dtype=np.float64)) < 0):
            raise ValueError("x_knots must be nondecreasing")
        if np.any(np.diff(y) < 0):
            raise ValueError("y_knots must be nondecreasing (an isotonic fit)")
        if y[0] < 0 or y[-1] > 1:
            raise ValueError("y_knots must lie in [0, 1] (calibrated probabilities)")
        width = np.diff(x)
        # A zero-width segment (a step, or knots merged by float32) is never selected: the
        # count jumps past it. The last knot's segment has no width: flat to the right.
        inverse = np.divide(1.0, width, out=np.zeros_like(width), where=width > 0)
        self.register_buffer("x_knots", torch.tensor(x, dtype=torch.float32))
        self.register_buffer("y_knots", torch.tensor(y, dtype=torch.float32))
        self.register_buffer("y_next", torch.tensor(np.r_[y[1:], y[-1]], dtype=torch.float32))
        self.register_buffer("inverse_width", torch.tensor(np.r_[inverse, 0.0],
                                                           dtype=torch.float32))

    def forward(self, logit: torch.Tensor) -> torch.Tensor:
        # Last knot at or below the logit (0 left of every knot, where the clamp flattens).
        k = ((logit.unsqueeze(-1) >= self.x_knots).sum(-1) - 1).clamp(min=0)
        t = ((logit - self.x_knots[k]) * self.inverse_width[k]).clamp(0.0, 1.0)
        y, y_next = self.y_knots[k], self.y_next[k]
        # Capped at the segment's own end: float32 rounding cannot overshoot the next segment.
        return torch.minimum(y + (y_next - y) * t, y_next)

    def describe(self) -> dict[str, Any]:
        return {"kind": "isotonic", "x_knots": self.x_knots.tolist(),
                "y_knots": self.y_knots.tolist()}


def _scalar(name: str, value: float) -> torch.Tensor:
    v = float(value)
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    return torch.tensor(v, dtype=torch.float32)


class PlattCalibrator(nn.Module):
    """``logit [B] -> sigmoid(a * logit + b) [B]`` (``fit_platt``: smoothed targets)."""

    a: torch.Tensor  # []
    b: torch.Tensor  # []

    def __init__(self, a: float, b: float) -> None:
        super().__init__()
        self.register_buffer("a", _scalar("a", a))
        self.register_buffer("b", _scalar("b", b))

    def forward(self, logit: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.a * logit + self.b)

    def describe(self) -> dict[str, Any]:
        return {"kind": "platt", "a": self.a.item(), "b": self.b.item()}


class TemperatureCalibrator(nn.Module):
    """``logit [B] -> sigmoid(scale * logit + bias) [B]`` (``fit_temperature_bias``).

    Platt's form fitted to the raw labels; ``1 / scale`` is the temperature.
    """

    scale: torch.Tensor  # []
    bias: torch.Tensor  # []

    def __init__(self, scale: float, bias: float) -> None:
        super().__init__()
        self.register_buffer("scale", _scalar("scale", scale))
        self.register_buffer("bias", _scalar("bias", bias))

    def forward(self, logit: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.scale * logit + self.bias)

    def describe(self) -> dict[str, Any]:
        return {"kind": "temperature", "scale": self.scale.item(), "bias": self.bias.item()}


_PARAMETERS = {"identity": (), "isotonic": ("x_knots", "y_knots"), "platt": ("a", "b"),
               "temperature": ("scale", "bias")}


def calibrator_from_description(description: Mapping[str, Any]) -> nn.Module:
    """Rebuilds a calibrator from its ``describe()`` dict; unknown kinds or keys raise."""
    kind = description.get("kind")
    if kind not in _PARAMETERS:
        raise ValueError(f"unknown calibrator kind {kind!r}; expected one of {sorted(_PARAMETERS)}")
    expected = {"kind", *_PARAMETERS[kind]}
    if set(description) != expected:
        raise ValueError(f"a {kind} calibrator takes keys {sorted(expected)}, "
                         f"got {sorted(description)}")
    if kind == "isotonic":
        return IsotonicCalibrator(description["x_knots"], description["y_knots"])
    if kind == "platt":
        return PlattCalibrator(description["a"], description["b"])
    if kind == "temperature":
        return TemperatureCalibrator(description["scale"], description["bias"])
    return IdentityCalibrator()


def calibrate_composed(*components: torch.Tensor, direct: torch.Tensor | None = None) -> torch.Tensor:
    """A composed task's calibrated probability ``[B]`` from its calibrated components.

    Without ``direct``: the product (``p_ctcvr = p_ctr * p_cvr``), consistent by
    construction. With ``direct`` (the composed task calibrated on its own labels):
    ``min(direct, *components)``, since a joint probability cannot exceed either factor.

    >>> calibrate_composed(torch.tensor([0.5]), torch.tensor([0.2])).tolist()
    [0.10000000149011612]
    >>> calibrate_composed(torch.tensor([0.5]), torch.tensor([0.2]), direct=torch.tensor([0.3]))
    tensor([0.2000])
    """
    if not components:
        raise ValueError("a composed task needs at least one component")
    if direct is None:
        p = components[0]
        for c in components[1:]:
            p = p * c
        return p
    for c in components:
        direct = torch.minimum(direct, c)
    return direct


def _log_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """``log(sigmoid(x))`` from ``exp`` and ``log`` alone.

    The exporter writes ``logsigmoid`` as ``Log(Sigmoid(x))``, and onnxruntime's ``Sigmoid``
    is only accurate to ~1e-7 absolute: it returns 0 below x ~ -17, and so ``-inf``.
    """
    return torch.clamp(x, max=0.0) - torch.log(1.0 + torch.exp(-torch.abs(x)))


def product_logit(logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """``logit(prod_i sigmoid(l_i))`` ``[B]`` without cancellation.

    ``1 - prod p_i = sum_k (prod_{i<k} p_i) (1 - p_k)`` is a sum of positive terms, each
    an ``exp`` of a log-probability, so a product near 0 or 1 keeps its precision; the
    complement is floored at float32's smallest normal so the logit stays finite.
    """
    log_p = torch.zeros_like(logits[0])
    complement = torch.zeros_like(logits[0])
    for logit in logits:
        complement = complement + torch.exp(log_p + _log_sigmoid(-logit))
        log_p = log_p + _log_sigmoid(logit)
    return log_p - torch.log(complement.clamp(min=torch.finfo(torch.float32).tiny))


class TaskCalibrators(nn.Module):
    """``{task: logit [B]} -> {task: calibrated p [B]}`` for a multi-task model.

    Args:
        calibrators: a calibrator (or None: ``sigmoid``) per task. A task named in
            ``products`` as well is calibrated directly on its raw score, the logit of
            the product of its components' raw probabilities, then capped by them.
        products: composed task -> component tasks (``{"ctcvr": ["ctr", "cvr"]}``); its
            output is ``calibrate_composed`` of the calibrated components. Components must
            be tasks of ``calibrators``.

    The input dict needs a logit for every task of ``calibrators`` that is not composed.
    A direct calibrator of a composed task reads a computed logit (``product_logit``), on
    which runtimes differ by float32 ulps; Platt or temperature keep those differences
    small, where an isotonic curve's steep segments could magnify them.
    """

    def __init__(self, calibrators: Mapping[str, nn.Module | None],
                 products: Mapping[str, Sequence[str]] | None = None) -> None:
        super().__init__()
        products = dict(products or {})
        base = [name for name in calibrators if name not in products]
        for name, parts in products.items():
            missing = [p for p in parts if p not in base]
            if not parts or missing:
                raise ValueError(f"composed task {name!r} needs components among the "
                                 f"calibrated tasks {base}, got {list(parts)}")
        for name, cal in calibrators.items():
            if cal is not None and not callable(getattr(cal, "describe", None)):
                raise ValueError(f"task {name!r}: a calibrator needs describe() for serving")
        self.calibrators = nn.ModuleDict({name: IdentityCalibrator() if cal is None else cal
                                          for name, cal in calibrators.items()})
        self.base = base
        self.products = {name: list(parts) for name, parts in products.items()}

    def forward(self, logits: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        probs = {name: self.calibrators[name](logits[name]) for name in self.base}
        for name, parts in self.products.items():
            components = [probs[p] for p in parts]
            direct = None
            if name in self.calibrators:
                direct = self.calibrators[name](product_logit([logits[p] for p in parts]))
            probs[name] = calibrate_composed(*components, direct=direct)
        return probs

    def describe(self) -> dict[str, Any]:
        """``{"tasks": {task: calibrator description}, "products": {task: [components]}}``."""
        return {"tasks": {name: cast(Calibrator, cal).describe()
                          for name, cal in self.calibrators.items()},
                "products": {name: list(parts) for name, parts in self.products.items()}}

    @classmethod
    def from_description(cls, description: Mapping[str, Any]) -> TaskCalibrators:
        if set(description) != {"tasks", "products"}:
            raise ValueError(f"task calibrators take keys ['products', 'tasks'], "
                             f"got {sorted(description)}")
        return cls({name: calibrator_from_description(d)
                    for name, d in description["tasks"].items()}, description["products"])
