"""Post-hoc calibration fits per task, in float64 numpy: isotonic, Platt, temperature + bias.

Each fit returns plain numbers that ``recmtl.modules.calibration`` turns into exportable
modules, which read the task's logit: fit them on the model's logits (Platt and temperature
also take probabilities with ``space="prob"``). ``fit_isotonic`` works on any score; fitted
on logits its knots feed ``IsotonicCalibrator``.

Degenerate inputs raise ``ValueError``: no rows, a single label value (nothing to calibrate
against) and constant scores (no ordering to map). A fit that cannot converge raises
``RuntimeError``.

Example:
    >>> import numpy as np
    >>> x, y = fit_isotonic(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, 1, 0, 1]))
    >>> x.tolist(), y.tolist()
    ([0.1, 0.2, 0.3, 0.4], [0.0, 0.5, 0.5, 1.0])
    >>> np.interp([0.25, 0.0, 0.9], x, y).tolist()  # linear between knots, clipped past them
    [0.5, 0.0, 1.0]
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Space = Literal["logit", "prob"]


def _as_float64(name: str, values: np.ndarray) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} has NaN or infinite values")
    return a


def _checked(scores: np.ndarray, labels: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    s = _as_float64("scores", scores)
    y = _as_float64("labels", labels)
    if len(s) != len(y):
        raise ValueError(f"{len(s)} scores but {len(y)} labels")
    if len(s) == 0:
        raise ValueError(f"{what} of an empty set")
    if np.any((y < 0) | (y > 1)):
        raise ValueError("labels must lie in [0, 1]")
    if np.all(y == y[0]):
        raise ValueError(f"{what}: every label is {y[0]:g}; calibration needs both outcomes")
    if np.all(s == s[0]):
        raise ValueError(f"{what}: every score is {s[0]:g}; constant scores cannot be calibrated")
    return s, y


def _pool_adjacent_violators(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted least-squares nondecreasing fit of ``y`` (already in score order)."""
    means: list[float] = []
    weights: list[float] = []
    sizes: list[int] = []
    for value, weight in zip(y.tolist(), w.tolist(), strict=True):
        mean, total, size = value, weight, 1
        # Equal neighbours pool too, as sklearn does; the fitted values are the same either way.
        while means and means[-1] >= mean:
            prev_total = weights.pop()
            mean = (means.pop() * prev_total + mean * total) / (prev_total + total)
            total += prev_total
            size += sizes.pop()
        means.append(mean)
        weights.append(total)
        sizes.append(size)
    return np.repeat(np.asarray(means), sizes)


def _thin(x: np.ndarray, y: np.ndarray, max_knots: int) -> tuple[np.ndarray, np.ndarray]:
    """Keeps the ends, then repeatedly the knot farthest from the current interpolation.

    A subset of a nondecreasing sequence is nondecreasing, so the thinned curve stays
    monotone; its error is largest at a dropped knot, which is what the greedy step reduces.
    """
    keep = np.zeros(len(x), dtype=bool)
    keep[[0, -1]] = True
    while keep.sum() < max_knots:
        error = np.abs(y - np.interp(x, x[keep], y[keep]))
        worst = int(np.argmax(error))
        if error[worst] == 0.0:
            break
        keep[worst] = True
    return x[keep], y[keep]


def fit_isotonic(scores: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None,
                 max_knots: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Isotonic (nondecreasing) calibration by pool-adjacent-violators.

    Same function as ``sklearn.isotonic.IsotonicRegression(increasing=True,
    out_of_bounds="clip")``: rows with zero weight are dropped, tied scores are pooled into
    one point (weighted mean label, summed weight), PAV fits the pooled points, and knots
    whose value equals both neighbours' are dropped. ``np.interp(s, x_knots, y_knots)``
    evaluates the calibrated probability, linear between knots and clipped past the ends.
    (sklearn also pools scores closer than 1e-15; here only equal scores are ties.)

    Args:
        scores: ``[N]``, the knots' x axis: logits for ``IsotonicCalibrator``.
        y: labels ``[N]`` in [0, 1].
        weights: optional nonnegative row weights ``[N]``.
        max_knots: if set (>= 2), at most this many knots, chosen greedily by largest
            interpolation error; both ends are kept and the curve stays monotone.

    Returns:
        ``(x_knots [K], y_knots [K])`` float64; x strictly increasing, y nondecreasing.
    """
    s, t = _as_float64("scores", scores), _as_float64("labels", y)
    w = np.ones_like(s) if weights is None else _as_float64("weights", weights)
    if len(s) != len(t):
        raise ValueError(f"{len(s)} scores but {len(t)} labels")
    if len(w) != len(s):
        raise ValueError(f"{len(s)} scores but {len(w)} weights")
    if np.any(w < 0):
        raise ValueError("weights must be nonnegative")
    if max_knots is not None and max_knots < 2:
        raise ValueError(f"max_knots must be at least 2, got {max_knots}")
    positive = w > 0
    s, t = _checked(s[positive], t[positive], "isotonic calibration")
    w = w[positive]

    order = np.argsort(s, kind="stable")
    s, t, w = s[order], t[order], w[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    x = s[starts]
    weight = np.add.reduceat(w, starts)
    fitted = _pool_adjacent_violators(np.add.reduceat(w * t, starts) / weight, weight)

    keep = np.ones(len(x), dtype=bool)
    keep[1:-1] = (fitted[1:-1] != fitted[:-2]) | (fitted[1:-1] != fitted[2:])
    x, fitted = x[keep], fitted[keep]
    if max_knots is not None and len(x) > max_knots:
        x, fitted = _thin(x, fitted, max_knots)
    return x, fitted


def _logits(scores: np.ndarray, space: Space) -> np.ndarray:
    if space == "logit":
        return scores
    if space != "prob":
        raise ValueError(f"space must be 'logit' or 'prob', got {space!r}")
    if np.any((scores <= 0) | (scores >= 1)):
        raise ValueError("probabilities must lie strictly between 0 and 1 to take logits")
    return np.log(scores) - np.log1p(-scores)


def _logistic_newton(f: np.ndarray, t: np.ndarray, a: float, b: float,
                     max_iter: int = 100) -> tuple[float, float]:
    """Minimises ``sum softplus(z) - t z`` over ``z = a f + b`` by damped Newton.

    The objective is convex; an Armijo backtracking step keeps every iterate decreasing it
    (Lin, Lin & Weng 2007 use the same scheme for Platt scaling).
    """
    def loss(theta: np.ndarray) -> float:
        z = theta[0] * f + theta[1]
        return float(np.sum(np.logaddexp(0.0, z) - t * z))

    design = np.stack([f, np.ones_like(f)], axis=1)
    theta = np.array([a, b])
    current = loss(theta)
    for _ in range(max_iter):
        z = theta[0] * f + theta[1]
        q = np.exp(-np.logaddexp(0.0, -z))
        gradient = design.T @ (q - t)
        if np.max(np.abs(gradient)) <= 1e-10 * len(f):
            return float(theta[0]), float(theta[1])
        hessian = (design * (q * (1.0 - q))[:, None]).T @ design
        step = np.linalg.solve(hessian + 1e-12 * np.eye(2), -gradient)
        decrease = float(gradient @ step)
        size = 1.0
        while size > 1e-10:
            trial = theta + size * step
            value = loss(trial)
            if value <= current + 1e-4 * size * decrease:
                break
            size /= 2.0
        else:
            # No step decreases the loss: we are at the optimum to machine precision.
            return float(theta[0]), float(theta[1])
        theta, current = trial, value
    raise RuntimeError(f"logistic calibration did not converge in {max_iter} Newton steps")


def fit_platt(scores: np.ndarray, y: np.ndarray, space: Space = "logit") -> tuple[float, float]:
    """Platt scaling: ``p = sigmoid(a * logit + b)`` fitted with Platt's smoothed targets.

    Positives get target ``(N+ + 1) / (N+ + 2)`` and negatives ``1 / (N- + 2)`` (Platt 1999),
    which keeps the optimum finite even when the classes are separated; the smoothed
    logloss is minimised by Newton's method in float64.

    Args:
        scores: ``[N]`` logits (``space="logit"``) or probabilities in (0, 1) (``"prob"``).
        y: binary labels ``[N]``.

    Returns:
        ``(a, b)``.
    """
    s, t = _checked(scores, y, "Platt calibration")
    if np.any((t != 0) & (t != 1)):
        raise ValueError("Platt calibration needs binary labels")
    f = _logits(s, space)
    n_pos = float(t.sum())
    n_neg = len(t) - n_pos
    target = np.where(t == 1, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
    return _logistic_newton(f, target, 0.0, float(np.log((n_pos + 1.0) / (n_neg + 1.0))))


def fit_temperature_bias(scores: np.ndarray, y: np.ndarray,
                         space: Space = "logit") -> tuple[float, float]:
    """``p = sigmoid(scale * logit + bias)`` minimising the logloss of ``y``.

    The same model as Platt scaling, fitted to the raw labels instead of Platt's smoothed
    targets (``1 / scale`` is the temperature). Labels may be fractional in [0, 1]. With no
    smoothing the optimum is infinite when the scores separate the classes, which raises.

    Returns:
        ``(scale, bias)``.
    """
    s, t = _checked(scores, y, "temperature calibration")
    f = _logits(s, space)
    binary = np.all((t == 0) | (t == 1))
    if binary and (f[t == 0].max() <= f[t == 1].min() or f[t == 1].max() <= f[t == 0].min()):
        raise ValueError("temperature calibration: the scores separate the labels, so the "
                         "logloss has no finite minimum (use fit_platt or fit_isotonic)")
    mean = float(np.mean(t))
    return _logistic_newton(f, t, 0.0, float(np.log(mean / (1.0 - mean))))
