"""RMTL weighting: sessions from group ids, one critic update against a float64 reference worked
by hand (gradients derived, not autograd), the weighted loss, and training through the loop
with every architecture."""

import numpy as np
import pytest
import torch
import torch.distributed as dist

from recmtl.config import ARCHITECTURES, ConfigError, TaskConfig, derive, load_config
from recmtl.config.rmtl import RmtlConfig
from recmtl.losses import task_losses
from recmtl.modules.critic import SessionCritics
from recmtl.train.rmtl import RmtlCritics, next_in_session

GROUP = [5, 2, 5, 2, 9, 5]


def test_sessions_are_the_group_rows_in_batch_order():
    nxt, has_next = next_in_session(torch.tensor(GROUP))
    assert nxt.tolist() == [2, 3, 5, 3, 4, 5]
    assert has_next.tolist() == [True, True, True, False, False, False]


def _softplus(z):
    return np.log1p(np.exp(z))


def test_one_update_matches_a_float64_reference():
    """Two linear critics (no hidden layer): Q = -softplus(w . [s, a] + b). The weights come
    from the critics before the step; the TD target bootstraps from the target critics at the
    next row of the session; one Adam step moves each parameter by lr g / (|g| + eps); the
    targets move target_tau of the way."""
    cfg = RmtlConfig(weight_lambda=0.5, gamma=0.9, target_tau=0.25, critic_lr=0.01,
                     critic_layers=())
    critics = SessionCritics(state_dim=2, num_tasks=2, layer_sizes=()).double()
    w = np.array([[0.3, -0.2, 0.5], [-0.4, 0.1, 0.2]])  # per task: [s0, s1, a]
    b = np.array([0.1, -0.3])
    with torch.no_grad():
        for t in range(2):
            critics.heads[t].weight.copy_(torch.tensor(w[t:t + 1]))
            critics.heads[t].bias.copy_(torch.tensor(b[t:t + 1]))
    rng = np.random.default_rng(0)
    s = rng.normal(size=(6, 2))
    a = rng.uniform(0.05, 0.95, size=(6, 2))
    r = -rng.uniform(0.1, 2.0, size=(6, 2))
    rmtl = RmtlCritics([TaskConfig("ctr", "click"), TaskConfig("ctcvr", "conversion")], cfg,
                       critics=critics)
    weights = rmtl.update(torch.tensor(s), torch.tensor(a), torch.tensor(r), torch.tensor(GROUP))

    x = np.stack([np.concatenate([s, a[:, t:t + 1]], axis=1) for t in range(2)])  # [T, B, 3]
    z = np.einsum("tbk,tk->bt", x, w) + b  # [B, T]
    q = -_softplus(z)
    np.testing.assert_allclose(weights.numpy(), 1 - 0.5 * q, rtol=1e-12)
    nxt, has_next = [2, 3, 5, 3, 4, 5], np.array([1, 1, 1, 0, 0, 0.0])
    y = r + 0.9 * has_next[:, None] * q[nxt]  # target critics = the critics before the step
    np.testing.assert_allclose(rmtl.last_loss.item(), ((q - y) ** 2).mean(), rtol=1e-12)
    dz = 2 * (q - y) / q.size * -(1 / (1 + np.exp(-z)))  # dL/dz, [B, T]
    grad_w = np.einsum("bt,tbk->tk", dz, x)
    grad_b = dz.sum(axis=0)
    new_w = w - 0.01 * grad_w / (np.abs(grad_w) + 1e-8)
    new_b = b - 0.01 * grad_b / (np.abs(grad_b) + 1e-8)
    for t in range(2):
        np.testing.assert_allclose(critics.heads[t].weight.detach().numpy()[0], new_w[t],
                                   rtol=1e-10)
        np.testing.assert_allclose(critics.heads[t].bias.item(), new_b[t], rtol=1e-10)
        np.testing.assert_allclose(rmtl.target.heads[t].weight.numpy()[0],
                                   0.75 * w[t] + 0.25 * new_w[t], rtol=1e-10)


def test_row_weights_scale_each_rows_log_loss():
    tasks = (TaskConfig("ctr", "click"),)
    z = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    y = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    wts = torch.tensor([1.5, 2.0, 1.0], dtype=torch.float64)
    got = task_losses({"ctr": z}, {"click": y}, tasks, row_weights={"ctr": wts})["ctr"]
    p = 1 / (1 + np.exp(-z.numpy()))
    bce = -(y.numpy() * np.log(p) + (1 - y.numpy()) * np.log(1 - p))
    assert got.item() == pytest.approx((wts.numpy() * bce).mean(), rel=1e-12)


@pytest.mark.parametrize("overrides, message", [
    (["features.group=null"], "rmtl needs features.group"),
    (["tasks=[{name: cvr, label: conversion, space: click}]"], "there are none"),
    (["train.pipeline=sparse_dist"], "rmtl needs the plain step"),
    (["loss.rmtl.gamma=1.0"], "loss.rmtl"),
])
def test_bad_rmtl_configs_name_their_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("configs/smoke.yaml", ["loss.weighting=rmtl", *overrides])


@pytest.fixture
def one_rank_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("arch", [pytest.param(a, marks=() if a == "mmoe" else pytest.mark.heavy)
                                  for a in ARCHITECTURES])
def test_every_architecture_trains_with_rmtl(arch, smoke_cfg, one_rank_group):
    """The loop's step with ``loss.weighting: rmtl`` on each backbone (mmoe in the quick
    suite, the others heavy: ~10 s each here): the critics read the backbone's input as state,
    persist across epochs and learn (their TD loss is finite and they move); the logged task
    losses stay finite."""
    from recmtl.models.builder import build_model
    from recmtl.train.loop import StepPlan, run_epoch
    from recmtl.train.sharding import shard_model
    from recmtl.train.worker import train_readers

    cfg = derive(smoke_cfg, {"model.arch": arch, "loss.weighting": "rmtl"})
    torch.manual_seed(0)
    dmp, opt, _ = shard_model(build_model(cfg, embedding_device="meta"), cfg.train,
                              torch.device("cpu"))
    reader, _ = train_readers(cfg, 0, 1)
    plan = StepPlan.from_config(cfg, torch.device("cpu"))
    logged = []
    run_epoch(dmp, opt, reader.epoch(0), plan, 1,
              hooks=_log_into(logged), warmup_steps=0)
    critics = plan.rmtl.critics
    first = [p.detach().clone() for p in critics.parameters()]
    width = critics.bodies[0].layers[0].in_features - 1
    assert width == plan.rmtl.state.shape[1], arch
    run_epoch(dmp, opt, reader.epoch(0), plan, 2, hooks=_log_into(logged), warmup_steps=0)
    assert torch.isfinite(plan.rmtl.last_loss), arch
    assert any(not torch.equal(a, b) for a, b in zip(first, critics.parameters(), strict=True)), arch
    assert all(np.isfinite(v) for losses in logged for v in losses), arch


def _log_into(logged):
    from recmtl.train.loop import EpochHooks

    return EpochHooks(log_every=1, on_log=lambda step, losses, rows: logged.append(losses))
