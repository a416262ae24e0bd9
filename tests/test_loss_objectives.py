"""Regression heads, ESCM2's IPS and DR, AITM's calibrator and uncertainty weighting against
float64 numpy references and hand-worked optima."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from recmtl.config import LossConfig, TaskConfig
from recmtl.losses import CALIBRATOR, imputation_output, multitask_loss, task_losses

CTR = TaskConfig("ctr", "click")
CTCVR = TaskConfig("ctcvr", "conversion", product_of=("ctr", "cvr"))


def _sig(x):
    return 1 / (1 + np.exp(-x))


def _bce(y, p):
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def _data(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = {k: torch.randn(n, generator=g, dtype=torch.float64) * 2
           for k in ("ctr", "cvr", imputation_output("cvr"), "watch")}
    click = (torch.rand(n, generator=g) < 0.4).double()
    labels = {"click": click, "conversion": click * (torch.rand(n, generator=g) < 0.3).double(),
              "watch_time": torch.rand(n, generator=g, dtype=torch.float64) * 5}
    return out, labels


def _np(d):
    return {k: v.numpy() for k, v in d.items()}


def test_regression_task_is_mean_squared_error_over_its_space():
    out, labels = _data()
    task = TaskConfig("watch", "watch_time", kind="regression", space="click")
    got = task_losses(out, labels, [CTR, task])["watch"].item()
    o, y = _np(out), _np(labels)
    clicked = y["click"] == 1
    assert got == pytest.approx(((o["watch"] - y["watch_time"])[clicked] ** 2).mean(), rel=1e-12)


@pytest.mark.parametrize("clip", [0.05, 0.3])
def test_escm2_ips_matches_numpy(clip):
    out, labels = _data()
    cvr = TaskConfig("cvr", "conversion", space="click", escm2="ips")
    got = task_losses(out, labels, [CTR, cvr, CTCVR], LossConfig(propensity_clip=clip))["cvr"]
    o, y = _np(out), _np(labels)
    prop = np.maximum(_sig(o["ctr"]), clip)
    expected = (y["click"] * _bce(y["conversion"], _sig(o["cvr"])) / prop).mean()
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_escm2_dr_matches_numpy_and_trains_cvr_on_unclicked_rows():
    out, labels = _data()
    out = {k: v.clone().requires_grad_(True) for k, v in out.items()}
    cvr = TaskConfig("cvr", "conversion", space="click", escm2="dr")
    got = task_losses(out, labels, [CTR, cvr], LossConfig(propensity_clip=0.05))["cvr"]
    o, y = {k: v.detach().numpy() for k, v in out.items()}, _np(labels)
    prop = np.maximum(_sig(o["ctr"]), 0.05)
    p_cvr, r = _sig(o["cvr"]), _sig(o[imputation_output("cvr")])
    e = _bce(y["conversion"], p_cvr)
    e_hat = _bce(r, p_cvr)
    expected = (e_hat + y["click"] * (e - e_hat) / prop).mean()
    expected += (y["click"] * (e - e_hat) ** 2 / prop).mean()
    assert got.item() == pytest.approx(expected, rel=1e-10)
    got.backward()
    unclicked = labels["click"] == 0
    assert out["cvr"].grad[unclicked].abs().sum() > 0  # IPS alone gives these rows nothing
    assert out["ctr"].grad is None or out["ctr"].grad.abs().sum() == 0  # propensity detached


def test_calibrator_penalises_only_a_later_task_above_an_earlier_one():
    ctr = TaskConfig("ctr", "click")
    buy = TaskConfig("buy", "conversion")
    z_ctr = torch.tensor([0.0, 0.0, 2.0])
    z_buy = torch.tensor([1.0, -1.0, 0.0])
    labels = {"click": torch.zeros(3), "conversion": torch.zeros(3)}
    got = task_losses({"ctr": z_ctr, "buy": z_buy}, labels, [ctr, buy],
                      LossConfig(calibrator_weight=1.0))[CALIBRATOR].item()
    # hand-worked: only row 0 has p_buy = s(1) > p_ctr = s(0)
    assert got == pytest.approx((1 / (1 + math.exp(-1)) - 0.5) / 3, rel=1e-6)


def test_uncertainty_weighting_terms_and_their_optimum():
    out, labels = _data()
    watch = TaskConfig("watch", "watch_time", kind="regression", loss_weight=2.0)
    tasks = [CTR, watch]
    plain = task_losses(out, labels, tasks)
    log_vars = torch.tensor([0.3, -0.2], dtype=torch.float64, requires_grad=True)
    total, _ = multitask_loss(out, labels, tasks, LossConfig(weighting="uncertainty"), log_vars)
    l_ctr, l_watch = plain["ctr"].item(), 2.0 * plain["watch"].item()
    expected = (math.exp(-0.3) * l_ctr + 0.15) + (0.5 * math.exp(0.2) * l_watch - 0.1)
    assert total.item() == pytest.approx(expected, rel=1e-12)
    # d/ds = 0 at s = log(2 L) for a binary task and s = log(L) for a regression task
    at_optimum = torch.tensor([math.log(2 * l_ctr), math.log(l_watch)], dtype=torch.float64,
                              requires_grad=True)
    total, _ = multitask_loss(out, labels, tasks, LossConfig(weighting="uncertainty"), at_optimum)
    (grad,) = torch.autograd.grad(total, at_optimum)
    np.testing.assert_allclose(grad.numpy(), 0.0, atol=1e-12)


def test_zero_weight_tasks_are_reported_but_not_trained():
    out, labels = _data()
    cvr = dataclasses.replace(TaskConfig("cvr", "conversion", space="click"), loss_weight=0.0)
    total, per_task = multitask_loss(out, labels, [CTR, cvr])
    assert per_task["cvr"] > 0
    assert total.item() == pytest.approx(per_task["ctr"].item(), rel=1e-12)
