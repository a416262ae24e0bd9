"""INFNet against a float64 hand-written reference (tokens, proxies, masked cross-attention,
Proxy Gated Units, task readout), padding that never matters, and the sequence tokens."""

import math

import numpy as np
import pytest
import torch

from recmtl.modules.infnet import INFNet, SequenceTokens


def _np(t):
    return t.detach().double().numpy()


def _lin(m, x):
    return x @ _np(m.weight).T + _np(m.bias)


def _ln(m, x):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + m.eps) * _np(m.weight) + _np(m.bias)


def _attn(m, q, kv, valid):
    """One row: ``q [Nq, D], kv [Nk, D], valid [Nk]`` bool; loops over heads and queries."""
    d, h = q.shape[1], m.num_heads
    qq, kvn = _lin(m.q, _ln(m.norm_q, q)), _ln(m.norm_kv, kv)
    kk, vv = _lin(m.k, kvn), _lin(m.v, kvn)
    out = np.zeros_like(qq)
    w = d // h
    for head in range(h):
        cols = slice(head * w, (head + 1) * w)
        for i in range(q.shape[0]):
            keys = [j for j in range(kv.shape[0]) if valid[j]]
            if not keys:
                continue
            s = np.array([qq[i, cols] @ kk[j, cols] / math.sqrt(w) for j in keys])
            p = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
            out[i, cols] = sum(pj * vv[j, cols] for pj, j in zip(p, keys, strict=True))
    return _lin(m.out, out)


def _pgu(m, x, proxies):
    gate = 1 / (1 + np.exp(-_lin(m.gate, proxies.mean(0))))
    up = _lin(m.up, _ln(m.norm, x))
    gelu = 0.5 * up * (1 + np.vectorize(math.erf)(up / math.sqrt(2)))
    return _lin(m.down, gelu * gate)


def _reference(net, x):
    """``x [B, in]`` -> ``[T, B, D]``, row by row; the input layout of INFNet's docstring."""
    out = []
    for row in _np(x):
        # Categorical tokens: blocks 0 and 2 by their linear maps, the scalars x * w + b.
        tok = net.tokenizer
        cat = [_lin(tok.blocks[0], row[0:4]), _lin(tok.blocks[1], row[19:23])]
        cat += [row[23 + j] * _np(tok.scalar_weight)[j] + _np(tok.scalar_bias)[j]
                for j in range(2)]
        slots = row[4:19].reshape(3, 5)
        tokens = {"cat": np.stack(cat), "seq": _lin(net.item_maps["1"], slots[:, :4])}
        valid = {"cat": np.ones(4, bool), "seq": slots[:, 4] > 0.5}
        proxies = {s: _np(net.proxies[s]) for s in ("cat", "seq")}
        task = _np(net.task_tokens)
        for blk in net.blocks:
            proxies = {s: p + _attn(blk.gather[s], p, tokens[s], valid[s])
                       for s, p in proxies.items()}
            other = {"cat": "seq", "seq": "cat"}
            new = {s: tokens[s] + _attn(blk.flow[s], tokens[s],
                                        np.concatenate([proxies[other[s]], task]),
                                        np.ones(len(proxies[other[s]]) + len(task), bool))
                   for s in ("cat", "seq")}
            if blk.task_reads == "proxies":
                kv = np.concatenate([proxies["cat"], proxies["seq"]])
                ok = np.ones(len(kv), bool)
            else:
                kv = np.concatenate([new_kv for new_kv in (tokens["cat"], tokens["seq"])])
                ok = np.concatenate([valid["cat"], valid["seq"]])
            task = task + _attn(blk.flow["task"], task, kv, ok)
            tokens = {s: t + _pgu(blk.pgu[s], t, proxies[s]) for s, t in new.items()}
            task = task + _pgu(blk.pgu["task"], task, task)
        out.append(_ln(net.norm, task))
    return np.stack(out, axis=1)


def _net(task_reads):
    torch.manual_seed(0)
    return INFNet(block_widths=[4, 3 * 5, 4], sequence_blocks={1: (3, 4)}, num_scalars=2,
                  num_tasks=2, dim=4, num_layers=2, num_heads=2, num_proxies=2, hidden=6,
                  task_reads=task_reads).double()


def _input(lengths):
    """Rows of [cat 4 | 3 slots of (4 + validity) | cat 4 | 2 floats] with those lengths."""
    x = torch.randn(len(lengths), 25, dtype=torch.float64)
    slots = x[:, 4:19].view(len(lengths), 3, 5)
    for b, n in enumerate(lengths):
        slots[b, :, 4] = (torch.arange(3) < n).double()
        slots[b, n:, :4] = 0.0
    return x


@pytest.mark.parametrize("task_reads", ["proxies", "tokens"])
def test_infnet_matches_a_float64_reference(task_reads):
    net = _net(task_reads)
    x = _input([3, 0, 1, 2])  # full, empty (no sequence token valid), partial
    got = net(x)
    assert got.shape == (2, 4, 4)
    np.testing.assert_allclose(_np(got), _reference(net, x), rtol=1e-9, atol=1e-10)


def test_padding_never_reaches_the_tasks():
    net = _net("tokens")
    x = _input([1, 2])
    noisy = x.clone()
    noisy[0, 4 + 5:19] = torch.randn(10, dtype=torch.float64)  # padded slots' items...
    noisy[0, 4 + 5 + 4] = noisy[0, 4 + 10 + 4] = 0.0            # ...still marked invalid
    noisy[1, 4 + 10:4 + 14] = 1e6
    torch.testing.assert_close(net(noisy), net(x))


def test_each_task_reads_its_own_token():
    net = _net("proxies")
    x = _input([2, 3])
    with torch.no_grad():
        base = net(x)
        net.task_tokens[1] += 1.0
        moved = net(x)
    # Task 1's token moved: the task tokens share only the PGU gate's mean, so task 0 moves
    # too, but by less than task 1.
    assert (moved[1] - base[1]).abs().mean() > (moved[0] - base[0]).abs().mean()


def test_sequence_tokens_hand_on_items_and_validity():
    keys = torch.arange(12.0).view(2, 3, 2)
    out = SequenceTokens(embedding_dim=2, max_len=3)(torch.zeros(2, 2), keys, torch.tensor([2, 5]))
    assert out.tolist() == [[0, 1, 1, 2, 3, 1, 0, 0, 0], [6, 7, 1, 8, 9, 1, 10, 11, 1]]


def test_infnet_refuses_a_sequence_block_of_the_wrong_width():
    with pytest.raises(ValueError, match=r"not 3 x \(4 \+ 1\)"):
        INFNet(block_widths=[14], sequence_blocks={0: (3, 4)}, num_scalars=0, num_tasks=1,
               dim=4, num_layers=1, num_heads=1, num_proxies=1, hidden=4)
