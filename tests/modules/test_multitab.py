"""MultiTabTransformer: the multitask mask, a float64 hand-written block, a plain-encoder check."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from recmtl.modules.multitab import MultiTabTransformer, multitask_attention_mask

D, F, HEADS = 8, 4, 2


def _net(num_tasks=3, num_layers=2, seed=0, **kwargs) -> MultiTabTransformer:
    torch.manual_seed(seed)
    return MultiTabTransformer(dim=D, num_features=F, num_tasks=num_tasks, num_layers=num_layers,
                               num_heads=HEADS, ffn_dim=12, **kwargs).double().eval()


def test_mask_lets_tasks_read_features_and_themselves_only():
    # Rows: queries [task0, task1, feat0, feat1]; columns: keys in the same order.
    np.testing.assert_array_equal(multitask_attention_mask(2, 2).int().numpy(),
                                  [[1, 0, 1, 1], [0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1]])
    np.testing.assert_array_equal(multitask_attention_mask(2, 2, features_see_tasks=True).int().numpy(),
                                  [[1, 0, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]])


@pytest.mark.parametrize("features_see_tasks", [False, True])
def test_changing_task_j_token_leaves_task_i_alone_only_under_the_mask(features_see_tasks):
    net = _net(features_see_tasks=features_see_tasks)
    x = torch.randn(5, F, D, dtype=torch.float64)
    before = net(x).detach()
    with torch.no_grad():
        net.task_tokens[1] += torch.randn(D, dtype=torch.float64)
    after = net(x).detach()
    assert not torch.allclose(before[1], after[1])
    for i in (0, 2):
        if features_see_tasks:  # the features carry task 1 to the others: the test can fail
            assert not torch.allclose(before[i], after[i])
        else:
            torch.testing.assert_close(before[i], after[i], rtol=0, atol=1e-13)


def _layer_norm(h, norm):
    mu = h.mean(-1, keepdims=True)
    var = ((h - mu) ** 2).mean(-1, keepdims=True)
    return (h - mu) / np.sqrt(var + norm.eps) * _np(norm.weight) + _np(norm.bias)


def _np(t):
    return t.detach().numpy()


def _block_reference(block, h, allowed):
    """One pre-norm block, head by head, token by token: ``h [N, D]`` for one sample."""
    n, d = h.shape
    dh = d // HEADS
    qkv = _layer_norm(h, block.norm1) @ _np(block.qkv.weight).T + _np(block.qkv.bias)
    q, k, v = qkv[:, :d], qkv[:, d:2 * d], qkv[:, 2 * d:]
    attended = np.zeros((n, d))
    for head in range(HEADS):
        cols = slice(head * dh, (head + 1) * dh)
        for i in range(n):
            keys = [j for j in range(n) if allowed[i][j]]
            scores = np.array([q[i, cols] @ k[j, cols] / math.sqrt(dh) for j in keys])
            weights = np.exp(scores - scores.max())
            weights /= weights.sum()
            attended[i, cols] = sum(w * v[j, cols] for w, j in zip(weights, keys, strict=True))
    h = h + attended @ _np(block.out.weight).T + _np(block.out.bias)
    hidden = _layer_norm(h, block.norm2) @ _np(block.ff1.weight).T + _np(block.ff1.bias)
    gelu = np.array([[0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in row] for row in hidden])
    return h + gelu @ _np(block.ff2.weight).T + _np(block.ff2.bias)


def test_one_block_matches_a_float64_hand_computation():
    tasks = 2
    net = _net(num_tasks=tasks, num_layers=1, output_dim=3)
    with torch.no_grad():  # non-trivial norms, so a swapped weight/bias shows
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(3, F, D, dtype=torch.float64)
    # Allowed (query, key) pairs written out: task i sees itself and the features.
    allowed = [[j == i or j >= tasks for j in range(tasks + F)] for i in range(tasks)]
    allowed += [[j >= tasks for j in range(tasks + F)] for _ in range(F)]
    out = net(x).detach().numpy()
    assert out.shape == (tasks, 3, 3) and net.output_dim == 3 and net.num_tasks == tasks
    for b in range(3):
        h = np.concatenate([_np(net.task_tokens), x[b].numpy()])
        h = _block_reference(net.blocks[0], h, allowed)
        expected = _layer_norm(h[:tasks], net.norm) @ _np(net.proj.weight).T + _np(net.proj.bias)
        np.testing.assert_allclose(out[:, b], expected, atol=1e-12)


def test_one_task_with_open_features_is_a_plain_pre_norm_encoder():
    net = _net(num_tasks=1, num_layers=2, features_see_tasks=True)
    layer = nn.TransformerEncoderLayer(D, HEADS, dim_feedforward=12, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
    encoder = nn.TransformerEncoder(layer, num_layers=2, norm=nn.LayerNorm(D),
                                    enable_nested_tensor=False).double().eval()
    with torch.no_grad():
        for ours, theirs in zip(net.blocks, encoder.layers, strict=True):
            theirs.self_attn.in_proj_weight.copy_(ours.qkv.weight)
            theirs.self_attn.in_proj_bias.copy_(ours.qkv.bias)
            theirs.self_attn.out_proj.load_state_dict(ours.out.state_dict())
            theirs.linear1.load_state_dict(ours.ff1.state_dict())
            theirs.linear2.load_state_dict(ours.ff2.state_dict())
            theirs.norm1.load_state_dict(ours.norm1.state_dict())
            theirs.norm2.load_state_dict(ours.norm2.state_dict())
        encoder.norm.load_state_dict(net.norm.state_dict())
    x = torch.randn(6, F, D, dtype=torch.float64)
    tokens = torch.cat([net.task_tokens.expand(6, 1, D), x], dim=1)
    torch.testing.assert_close(net(x)[0], encoder(tokens)[:, 0])


def test_gradients_reach_the_task_tokens_and_the_input():
    net = _net()
    x = torch.randn(3, F, D, dtype=torch.float64, requires_grad=True)
    (net(x)[2] * torch.randn(3, D, dtype=torch.float64)).sum().backward()  # LayerNorm: plain sums are flat
    assert net.task_tokens.grad[2].abs().sum() > 0
    assert net.task_tokens.grad[:2].abs().sum() == 0  # the mask keeps tasks apart in backward too
    assert x.grad.abs().sum() > 0


def test_rejects_a_wrong_number_of_feature_tokens():
    with pytest.raises(ValueError, match="feature tokens"):
        _net()(torch.zeros(2, F + 1, D, dtype=torch.float64))


def test_export_with_a_dynamic_batch():
    net = _net(output_dim=5).float()
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    program = torch.export.export(net, (torch.randn(3, F, D),), dynamic_shapes=({0: batch},))
    for b in (1, 17):
        x = torch.randn(b, F, D)
        torch.testing.assert_close(program.module()(x), net(x))
