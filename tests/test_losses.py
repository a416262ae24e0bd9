import numpy as np
import pytest
import torch

from recmtl.config import TaskConfig
from recmtl.losses import log1mexp, multitask_loss, task_probabilities

TASKS = (
    TaskConfig("ctr", "click"),
    TaskConfig("cvr", "conversion", loss_weight=0.5, space="click"),
    TaskConfig("ctcvr", "conversion", product_of=("ctr", "cvr")),
)


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = {"ctr": torch.randn(n, generator=g) * 3, "cvr": torch.randn(n, generator=g) * 3}
    click = (torch.rand(n, generator=g) < 0.5).float()
    conv = click * (torch.rand(n, generator=g) < 0.5).float()
    return logits, {"click": click, "conversion": conv}


def test_ctcvr_is_exact_product():
    logits, _ = _data()
    p = task_probabilities(logits, TASKS)
    torch.testing.assert_close(p["ctcvr"], torch.sigmoid(logits["ctr"]) * torch.sigmoid(logits["cvr"]),
                               rtol=0, atol=0)


def test_loss_matches_float64_reference():
    logits, labels = _data()
    total, per_task = multitask_loss(logits, labels, TASKS)
    z = {k: v.double().numpy() for k, v in logits.items()}
    y = {k: v.double().numpy() for k, v in labels.items()}
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    bce = lambda t, p: -(t * np.log(p) + (1 - t) * np.log(1 - p))  # noqa: E731
    ctr = bce(y["click"], sig(z["ctr"])).mean()
    clicked = y["click"] == 1
    cvr = bce(y["conversion"][clicked], sig(z["cvr"][clicked])).mean()
    ctcvr = bce(y["conversion"], sig(z["ctr"]) * sig(z["cvr"])).mean()
    assert per_task["ctr"].item() == pytest.approx(ctr, rel=1e-5)
    assert per_task["cvr"].item() == pytest.approx(cvr, rel=1e-5)
    assert per_task["ctcvr"].item() == pytest.approx(ctcvr, rel=1e-5)
    assert total.item() == pytest.approx(ctr + 0.5 * cvr + ctcvr, rel=1e-5)


def test_log1mexp_is_accurate_at_both_ends():
    x = torch.tensor([-1e-10, -1e-3, -0.5, -1.0, -10.0, -50.0], dtype=torch.float64)
    expected = torch.log(-torch.expm1(x))  # float64 reference
    torch.testing.assert_close(log1mexp(x.float()).double(), expected, rtol=1e-5, atol=1e-12)


def test_tiny_product_gives_finite_loss_and_gradient():
    logits = {"ctr": torch.tensor([-40.0], requires_grad=True),
              "cvr": torch.tensor([-40.0], requires_grad=True)}
    labels = {"click": torch.tensor([0.0]), "conversion": torch.tensor([0.0])}
    total, _ = multitask_loss(logits, labels, TASKS)
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(logits["ctr"].grad).all()
