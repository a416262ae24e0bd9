"""DTRN against float64 hand-written references: the hypernetwork's generated weights, the
per-task masked attention, the per-task SENet and the backbone reading each task's own bottom;
with one task the interest module is DIN's TargetAttention with the generated weights."""

import numpy as np
import pytest
import torch

from recmtl.modules.dtrn import DTRN, TaskInterest, TaskSENet
from recmtl.modules.gates import SoftmaxGate
from recmtl.modules.mlp import BatchedExperts
from recmtl.modules.mmoe import MMoE
from recmtl.modules.sequence import TargetAttention


def _np(t):
    return t.detach().double().numpy()


def _generated(layer, task_embedding):
    """Hand-written ``W + U diag(g(e)) V`` of one ``TaskHyperLinear`` for one task."""
    core = _np(layer.generator.weight) @ task_embedding + _np(layer.generator.bias)
    weight = _np(layer.weight).copy()
    for r, c in enumerate(core):
        weight += c * np.outer(_np(layer.left)[:, r], _np(layer.right)[r])
    return weight


def _reference_interest(unit, query, keys, lengths, normalize):
    """Loops over tasks, rows and valid slots in float64."""
    tasks, d = unit.task_embeddings.shape[0], keys.shape[2]
    out = np.zeros((keys.shape[0], tasks * d))
    for t in range(tasks):
        layers = [(_generated(layer, _np(unit.task_embeddings)[t]), _np(layer.bias))
                  for layer in unit.layers]
        for b in range(keys.shape[0]):
            n = min(int(lengths[b]), keys.shape[1])
            q = _np(query[b])
            scores = []
            for i in range(n):
                k = _np(keys[b, i])
                h = np.concatenate([q, k, q - k, q * k])
                for j, (w, bias) in enumerate(layers):
                    h = h @ w + bias
                    h = np.maximum(h, 0) if j < len(layers) - 1 else h
                scores.append(h[0])
            if n == 0:
                continue
            s = np.array(scores)
            w = np.exp(s - s.max()) / np.exp(s - s.max()).sum() if normalize else s
            out[b, t * d:(t + 1) * d] = sum(w[i] * _np(keys[b, i]) for i in range(n))
    return out


@pytest.mark.parametrize("normalize", [True, False])
def test_task_interest_matches_a_float64_loop(normalize):
    torch.manual_seed(0)
    unit = TaskInterest(embedding_dim=3, hidden_dims=[5, 4], num_tasks=3, task_dim=2, rank=2,
                        normalize=normalize).double()
    query, keys = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 5, 3, dtype=torch.float64)
    lengths = torch.tensor([5, 0, 2, 7])  # full, empty, partial, longer than L (counts as L)
    keys[2, 2:] = float("nan")  # padding content never reaches the output
    got = unit(query, keys, lengths)
    want = _reference_interest(unit, query, keys, lengths, normalize)
    np.testing.assert_allclose(_np(got), want, rtol=1e-10, atol=1e-12)
    assert torch.equal(got[1], torch.zeros(9, dtype=torch.float64))
    # The generated weights the module reports are the hand-written ones, and tasks differ.
    for layer, (weights, _) in zip(unit.layers, unit.generated_weights(), strict=True):
        for t in range(3):
            np.testing.assert_allclose(_np(weights[t]),
                                       _generated(layer, _np(unit.task_embeddings)[t]), rtol=1e-12)
    assert not torch.allclose(got[0, :3], got[0, 3:6])


def test_one_task_interest_is_target_attention_with_the_generated_weights():
    torch.manual_seed(1)
    unit = TaskInterest(embedding_dim=4, hidden_dims=[6], num_tasks=1, task_dim=3, rank=2)
    din = TargetAttention(embedding_dim=4, hidden_dims=[6])
    (w1, b1), (w2, b2) = unit.generated_weights()
    with torch.no_grad():
        din.hidden.layers[0].weight.copy_(w1[0].T)
        din.hidden.layers[0].bias.copy_(b1)
        din.score.weight.copy_(w2[0].T)
        din.score.bias.copy_(b2)
    query, keys, lengths = torch.randn(6, 4), torch.randn(6, 5, 4), torch.tensor([5, 3, 0, 1, 2, 4])
    torch.testing.assert_close(unit(query, keys, lengths), din(query, keys, lengths))


def test_shared_init_starts_every_task_at_the_shared_unit_and_then_moves_apart():
    torch.manual_seed(6)
    unit = TaskInterest(embedding_dim=4, hidden_dims=[6], num_tasks=3, task_dim=3, rank=2,
                        shared_init=True).double()
    for layer, (weight, _) in zip(unit.layers, unit.generated_weights(), strict=True):
        for t in range(3):  # W_t = W for every task
            torch.testing.assert_close(weight[t], layer.weight, rtol=0, atol=0)
    query, keys = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 6, 4, dtype=torch.float64)
    lengths = torch.tensor([6, 2, 0, 1, 4])
    out = unit(query, keys, lengths).view(5, 3, 4)
    torch.testing.assert_close(out[:, 1], out[:, 0], rtol=0, atol=0)
    torch.testing.assert_close(out[:, 2], out[:, 0], rtol=0, atol=0)
    # One SGD step on a loss that tells the tasks apart separates their weights: the zero
    # generator still gets gradient (through U and V), as LoRA's zero matrix does.
    (out * torch.arange(3, dtype=torch.float64).view(1, 3, 1)).sum().backward()
    generator = unit.layers[0].generator.weight
    assert generator.grad is not None and generator.grad.abs().sum() > 0
    with torch.no_grad():
        for p in unit.parameters():
            p -= 0.1 * p.grad
    weights = unit.generated_weights()[0][0]
    assert not torch.allclose(weights[0], weights[1])


def _reference_senet(senet, z):
    """``z [T, B, F]`` -> weights, task by task in float64."""
    out = []
    for t in range(z.shape[0]):
        h = np.maximum(_np(z[t]) @ _np(senet.w1[t]) + _np(senet.b1[t]), 0)
        s = h @ _np(senet.w2[t]) + _np(senet.b2[t])
        out.append(2 / (1 + np.exp(-s)) if senet.gate == "sigmoid" else np.maximum(s, 0))
    return np.stack(out)


@pytest.mark.parametrize("gate", ["sigmoid", "relu"])
def test_dtrn_matches_a_float64_reference(gate):
    """Blocks [user 4 | interest 2 x 3 | item 3], 2 dense floats, T = 2, an MMoE backbone."""
    torch.manual_seed(2)
    senet = TaskSENet(num_fields=5, num_tasks=2, reduction=2, gate=gate).double()
    backbone = MMoE(BatchedExperts(12, [6], 3), SoftmaxGate(12, 2, 3)).double()
    net = DTRN(block_widths=[4, 6, 3], task_blocks=[1], num_scalars=2, num_tasks=2,
               senet=senet, backbone=backbone)
    x = torch.randn(5, 15, dtype=torch.float64)
    got = net(x)
    assert got.shape == (2, 5, 6)
    xn = _np(x)
    for t in range(2):
        fields = [xn[:, 0:4], xn[:, 4 + 3 * t:7 + 3 * t], xn[:, 10:13], xn[:, 13:14], xn[:, 14:15]]
        z = np.stack([f.mean(axis=1) for f in fields], axis=1)
        z_all = torch.from_numpy(np.stack([z, z]))  # the SENet of task t reads task t's squeeze
        w = _reference_senet(senet, z_all)[t]
        bottom = np.concatenate([f * w[:, i:i + 1] for i, f in enumerate(fields)], axis=1)
        want = _np(backbone(torch.from_numpy(bottom))[t])  # task t's row on its own bottom
        np.testing.assert_allclose(_np(got[t]), want, rtol=1e-10, atol=1e-12)


def test_dtrn_pair_products_are_each_tasks_own():
    """Blocks [user 3 | interest 2 x 3 | item 3], 1 dense float, T = 2, with pairs: task t's
    input ends with <u, i_t>, <u, item>, <i_t, item> of its re-weighted blocks (a loop)."""
    torch.manual_seed(4)
    senet = TaskSENet(num_fields=4, num_tasks=2).double()
    backbone = MMoE(BatchedExperts(13, [6], 3), SoftmaxGate(13, 2, 3)).double()
    net = DTRN(block_widths=[3, 6, 3], task_blocks=[1], num_scalars=1, num_tasks=2,
               senet=senet, backbone=backbone, pairs=True)
    assert net.task_width == 3 + 3 + 3 + 1 + 3
    x = torch.randn(5, 13, dtype=torch.float64)
    bottoms = _np(net.task_inputs(x))
    xn = _np(x)
    for t in range(2):
        fields = [xn[:, 0:3], xn[:, 3 + 3 * t:6 + 3 * t], xn[:, 9:12], xn[:, 12:13]]
        z = np.stack([f.mean(axis=1) for f in fields], axis=1)
        w = _reference_senet(senet, torch.from_numpy(np.stack([z, z])))[t]
        rw = [f * w[:, i:i + 1] for i, f in enumerate(fields)]
        dots = [(rw[a] * rw[b]).sum(1, keepdims=True) for a, b in ((0, 1), (0, 2), (1, 2))]
        np.testing.assert_allclose(bottoms[t], np.concatenate(rw + dots, axis=1), rtol=1e-12)
    assert not np.allclose(bottoms[0][:, -3:], bottoms[1][:, -3:])  # the tasks' dots differ
    with pytest.raises(ValueError, match="one width per task"):
        DTRN(block_widths=[3, 4], task_blocks=[], num_scalars=0, num_tasks=2,
             senet=TaskSENet(num_fields=2, num_tasks=2), backbone=backbone, pairs=True)


def test_one_task_dtrn_is_the_backbone_on_the_reweighted_input():
    torch.manual_seed(3)
    senet = TaskSENet(num_fields=4, num_tasks=1).double()
    backbone = MMoE(BatchedExperts(7, [5], 2), SoftmaxGate(7, 1, 2)).double()
    net = DTRN(block_widths=[3, 2], task_blocks=[1], num_scalars=2, num_tasks=1,
               senet=senet, backbone=backbone)
    x = torch.randn(4, 7, dtype=torch.float64)
    z = torch.stack([x[:, :3].mean(1), x[:, 3:5].mean(1), x[:, 5], x[:, 6]], dim=1)
    w = senet(z.unsqueeze(0))[0]
    scale = torch.cat([w[:, :1].expand(4, 3), w[:, 1:2].expand(4, 2), w[:, 2:]], dim=1)
    torch.testing.assert_close(net(x), backbone(x * scale))


def test_dtrn_refuses_blocks_that_do_not_split_per_task():
    with pytest.raises(ValueError, match="split into 2 parts"):
        DTRN(block_widths=[3], task_blocks=[0], num_scalars=0, num_tasks=2,
             senet=TaskSENet(num_fields=1, num_tasks=2), backbone=torch.nn.Identity())
