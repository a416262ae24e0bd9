import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import expit
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from recmtl.metrics.fit_calibration import fit_isotonic, fit_platt, fit_temperature_bias


def _scores_and_labels(seed, n=2000, decimals=None):
    rng = np.random.default_rng(seed)
    logit = rng.normal(-1.0, 1.5, n)
    p = expit(logit)
    if decimals is not None:  # many tied scores
        p = np.round(p, decimals)
    y = (rng.random(n) < expit(1.3 * logit + 0.4)).astype(np.float64)
    return logit, p, y


def _sklearn_isotonic(p, y, weights=None):
    return IsotonicRegression(increasing=True, out_of_bounds="clip").fit(p, y, sample_weight=weights)


@pytest.mark.parametrize("decimals", [None, 2])
@pytest.mark.parametrize("weighted", [False, True])
def test_isotonic_matches_sklearn_knots_and_predictions(decimals, weighted):
    _, p, y = _scores_and_labels(1, decimals=decimals)
    weights = None
    if weighted:
        weights = np.random.default_rng(2).gamma(2.0, 1.0, len(p))
        weights[::17] = 0.0  # dropped rows, as sklearn drops them
    x_knots, y_knots = fit_isotonic(p, y, weights)
    reference = _sklearn_isotonic(p, y, weights)
    np.testing.assert_array_equal(x_knots, reference.X_thresholds_)
    np.testing.assert_allclose(y_knots, reference.y_thresholds_, rtol=0, atol=1e-12)
    held_out = np.r_[np.random.default_rng(3).random(500), p[:200], -0.5, 0.0, 1.0, 1.5]
    np.testing.assert_allclose(np.interp(held_out, x_knots, y_knots), reference.predict(held_out),
                               rtol=0, atol=1e-9)


def test_isotonic_fractional_labels_match_sklearn():
    rng = np.random.default_rng(4)
    p = rng.random(300)
    y = np.clip(p + rng.normal(0, 0.3, 300), 0, 1)
    x_knots, y_knots = fit_isotonic(p, y)
    reference = _sklearn_isotonic(p, y)
    points = np.linspace(-0.1, 1.1, 301)
    np.testing.assert_allclose(np.interp(points, x_knots, y_knots), reference.predict(points),
                               rtol=0, atol=1e-9)


def test_isotonic_hand_worked():
    # Sorted: (0.1, 0), (0.2, 1), (0.3, 0), (0.4, tie of 1 and 0 -> 0.5, weight 2), (0.5, 1).
    # PAV pools 1, 0 -> 0.5, then that block with the tie -> 0.5; the knot at 0.3 equals both
    # neighbours and is dropped.
    x, y = fit_isotonic(np.array([0.3, 0.1, 0.2, 0.4, 0.4, 0.5]), np.array([0, 0, 1, 1, 0, 1]))
    assert x.tolist() == [0.1, 0.2, 0.4, 0.5]
    np.testing.assert_allclose(y, [0.0, 0.5, 0.5, 1.0], rtol=0, atol=1e-15)
    # Weights: the violating pair (1 with weight 3, 0 with weight 1) pools to 0.75.
    x, y = fit_isotonic(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, 1, 0, 1]),
                        weights=np.array([1.0, 3.0, 1.0, 1.0]))
    assert x.tolist() == [0.1, 0.2, 0.3, 0.4]
    np.testing.assert_allclose(y, [0.0, 0.75, 0.75, 1.0], rtol=0, atol=1e-15)


def test_isotonic_thinning_keeps_ends_monotone_and_close():
    _, p, y = _scores_and_labels(5, n=20000)
    x_full, y_full = fit_isotonic(p, y)
    assert len(x_full) > 64
    x, yk = fit_isotonic(p, y, max_knots=64)
    assert len(x) <= 64 and x[0] == x_full[0] and x[-1] == x_full[-1]
    assert np.all(np.diff(x) > 0) and np.all(np.diff(yk) >= 0)
    assert np.isin(x, x_full).all()
    # Thinned knots lie on the full curve; between them the error stays small.
    np.testing.assert_array_equal(yk, np.interp(x, x_full, y_full))
    grid = np.linspace(0, 1, 5001)
    assert np.max(np.abs(np.interp(grid, x, yk) - np.interp(grid, x_full, y_full))) < 0.1
    same = fit_isotonic(p, y, max_knots=len(x_full))
    np.testing.assert_array_equal(same[0], x_full)


def _smoothed_logloss(theta, f, t):
    z = theta[0] * f + theta[1]
    return np.sum(np.logaddexp(0.0, z) - t * z)


def _gradient(theta, f, t):
    r = expit(theta[0] * f + theta[1]) - t
    return np.array([np.sum(r * f), np.sum(r)])


def test_platt_matches_logistic_regression_on_smoothed_targets():
    logit, _, y = _scores_and_labels(6)
    a, b = fit_platt(logit, y)
    n_pos, n_neg = y.sum(), len(y) - y.sum()
    t = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    # A soft target t is a positive row of weight t plus a negative row of weight 1 - t.
    lr = LogisticRegression(penalty=None, solver="newton-cholesky", tol=1e-12, max_iter=200)
    lr.fit(np.r_[logit, logit][:, None], np.r_[np.ones_like(y), np.zeros_like(y)],
           sample_weight=np.r_[t, 1 - t])
    np.testing.assert_allclose([a, b], [lr.coef_[0, 0], lr.intercept_[0]], rtol=0, atol=1e-6)
    scipy = minimize(_smoothed_logloss, [0.0, 0.0], args=(logit, t), jac=_gradient,
                     method="BFGS", options={"gtol": 1e-10})
    np.testing.assert_allclose([a, b], scipy.x, rtol=0, atol=1e-6)


def test_platt_on_probabilities_and_separable_scores():
    logit, p, y = _scores_and_labels(7, n=500)
    np.testing.assert_allclose(fit_platt(p, y, space="prob"), fit_platt(logit, y), atol=1e-9)
    # Separated classes: the smoothing keeps the optimum finite (Platt's reason for it).
    f = np.r_[np.linspace(-3, -1, 20), np.linspace(1, 3, 20)]
    labels = np.r_[np.zeros(20), np.ones(20)]
    a, b = fit_platt(f, labels)
    assert np.isfinite([a, b]).all() and a > 0
    np.testing.assert_allclose(_gradient([a, b], f, np.where(labels == 1, 21 / 22, 1 / 22)), 0,
                               atol=1e-8)


def _logloss(theta, f, y):
    return _smoothed_logloss(theta, f, y)


@pytest.mark.parametrize("seed", [8, 9])
def test_temperature_bias_matches_scipy_minimize(seed):
    logit, _, y = _scores_and_labels(seed)
    scale, bias = fit_temperature_bias(logit, y)
    reference = minimize(_logloss, [1.0, 0.0], args=(logit, y), jac=_gradient, method="L-BFGS-B",
                         options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 1000})
    np.testing.assert_allclose([scale, bias], reference.x, rtol=0, atol=1e-6)
    # The labels were drawn with scale 1.3 and bias 0.4 on these logits.
    assert abs(scale - 1.3) < 0.25 and abs(bias - 0.4) < 0.25


def test_temperature_equals_platt_without_smoothing():
    logit, _, y = _scores_and_labels(10, n=1000)
    lr = LogisticRegression(penalty=None, solver="newton-cholesky", tol=1e-12).fit(logit[:, None], y)
    np.testing.assert_allclose(fit_temperature_bias(logit, y), [lr.coef_[0, 0], lr.intercept_[0]],
                               rtol=0, atol=1e-6)
    assert np.max(np.abs(np.subtract(fit_platt(logit, y), fit_temperature_bias(logit, y)))) > 1e-4


@pytest.mark.parametrize("fit", [fit_isotonic, fit_platt, fit_temperature_bias])
@pytest.mark.parametrize("scores, labels, message", [
    ([0.1, 0.4, 0.7], [1, 1, 1], "every label is 1"),
    ([0.1, 0.4, 0.7], [0, 0, 0], "every label is 0"),
    ([0.3, 0.3, 0.3], [0, 1, 1], "every score is 0.3"),
    ([], [], "empty set"),
    ([0.1, 0.4], [0, 1, 1], "2 scores but 3 labels"),
    ([0.1, np.nan, 0.3], [0, 1, 1], "NaN"),
    ([0.1, 0.4, 0.7], [0, 2, 1], r"labels must lie in \[0, 1\]"),
])
def test_degenerate_inputs_raise(fit, scores, labels, message):
    with pytest.raises(ValueError, match=message):
        fit(np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.float64))


def test_more_input_errors():
    p, y = np.array([0.1, 0.4, 0.7, 0.9]), np.array([0.0, 1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="separate the labels"):
        fit_temperature_bias(np.array([-2.0, -1.0, 1.0, 2.0]), y[[0, 2, 1, 3]])
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        fit_platt(np.array([0.0, 0.4, 0.7, 0.9]), y, space="prob")
    with pytest.raises(ValueError, match="binary labels"):
        fit_platt(p, np.array([0.0, 0.5, 0.2, 1.0]))
    with pytest.raises(ValueError, match="weights must be nonnegative"):
        fit_isotonic(p, y, np.array([1.0, -1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="every label is 1"):  # only positives keep weight
        fit_isotonic(p, y, np.array([0.0, 1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="max_knots must be at least 2"):
        fit_isotonic(p, y, max_knots=1)
    with pytest.raises(ValueError, match="space must be"):
        fit_platt(p, y, space="odds")
