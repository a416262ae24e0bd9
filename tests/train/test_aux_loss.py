"""The sparse MoE's load-balancing loss reaches the training loss with weight
``model.moe_balance_weight``, and its value is the Switch loss recomputed in float64."""

import numpy as np
import torch

from recmtl.config import derive
from recmtl.data.reader import ParquetBatchReader
from recmtl.data.schema import FeatureSchema
from recmtl.models.builder import build_model
from recmtl.train.loop import EpochHooks, StepPlan, run_epoch


def _batch(cfg):
    reader = ParquetBatchReader(f"{cfg.data.root}/train", FeatureSchema.from_config(cfg), 256)
    return next(iter(reader.epoch(0)))


def _one_step(cfg, batch, aux_weight):
    """One unsharded training step at learning rate 0: the dense gradients and the logged
    losses (the model is left as it was)."""
    model = build_model(cfg, seed=1)
    logged = []
    hooks = EpochHooks(on_log=lambda step, losses, rows: logged.append(losses))
    plan = StepPlan(cfg.tasks, torch.device("cpu"), cfg.loss, aux_weight=aux_weight)
    run_epoch(model, torch.optim.SGD(model.parameters(), lr=0.0), iter([batch]), plan, 1, hooks)
    grads = {n: p.grad.clone() for n, p in model.dense_ranker.named_parameters()
             if p.grad is not None}
    return model, grads, logged[0]


def _switch_loss_float64(moe, x):
    """``mean_t E sum_e f_te P_te``: f the share of task t's top-k picks on e, P the batch mean
    of its full softmax."""
    w, b = (p.detach().double().numpy() for p in (moe.router.weight, moe.router.bias))
    t, e, k = moe.num_tasks, moe.num_experts, moe.k
    logits = (x @ w.T + b).reshape(len(x), t, e).transpose(1, 0, 2)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    picks = np.zeros_like(probs)
    np.put_along_axis(picks, np.argsort(-logits, axis=-1)[..., :k], 1.0, axis=-1)
    return float((e * (picks.mean(1) / k * probs.mean(1)).sum(-1)).mean())


def test_balance_loss_enters_the_total_with_its_weight(smoke_cfg):
    # Task routing, whose loss _switch_loss_float64 re-computes (sample routing's loss is
    # checked in tests/modules/test_sparse_moe.py).
    cfg = derive(smoke_cfg, {"model.arch": "sparse_moe", "model.num_experts": 6,
                            "model.moe_top_k": 2, "model.moe_routing": "task"})
    batch, weight = _batch(cfg), 0.5
    model, with_aux, logged = _one_step(cfg, batch, weight)
    _, without, logged_without = _one_step(cfg, batch, 0.0)
    assert len(logged) == len(cfg.tasks) + 1 and len(logged_without) == len(cfg.tasks)
    assert logged[:-1] == logged_without  # the task losses do not move

    # d(total_w - total_0) = w * d(aux), on every dense parameter the aux loss reaches.
    model.train()
    model(batch.dense, batch.sparse)
    aux = model.auxiliary_loss()
    assert aux is not None and aux.requires_grad
    params = dict(model.dense_ranker.named_parameters())
    names = sorted(with_aux)
    aux_grads = torch.autograd.grad(aux, [params[n] for n in names], allow_unused=True)
    reached = 0
    for name, g_aux in zip(names, aux_grads, strict=True):
        want = weight * g_aux if g_aux is not None else torch.zeros_like(without[name])
        torch.testing.assert_close(with_aux[name] - without[name], want, rtol=1e-4, atol=1e-6)
        reached += g_aux is not None and bool(g_aux.abs().sum() > 0)
    assert reached == 2  # the router's weight and bias; top-k picks carry no gradient

    # The logged value is the Switch loss, recomputed in float64 from the router's input.
    ranker = model.dense_ranker
    x = torch.cat([ranker.interaction(model.pooled(batch.sparse)), batch.dense], dim=1)
    expected = _switch_loss_float64(ranker.backbone, x.detach().double().numpy())
    assert abs(logged[-1] - expected) < 1e-5 and abs(aux.item() - expected) < 1e-5


def test_other_architectures_have_no_auxiliary_loss(smoke_cfg):
    batch = _batch(smoke_cfg)
    model = build_model(derive(smoke_cfg, {"model.arch": "multitab"}))
    model(batch.dense, batch.sparse)
    assert model.auxiliary_loss() is None
    sparse = build_model(derive(smoke_cfg, {"model.arch": "sparse_moe"}))
    assert sparse.auxiliary_loss() is None  # no forward yet
