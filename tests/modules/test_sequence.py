"""Sequence modules against float64 re-computations that loop over rows and see no padding."""

import numpy as np
import pytest
import torch
from torch import nn

from recmtl.modules.sequence import (
    SequenceEncoder,
    TargetAttention,
    jagged_to_padded,
    length_mask,
    masked_softmax,
    recency_positions,
)

D = 4


def _f64(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).numpy()


def _linears(module: nn.Module) -> list[tuple[np.ndarray, np.ndarray]]:
    """(W, b) of every nn.Linear in registration order, as float64 arrays."""
    return [(_f64(m.weight), _f64(m.bias)) for m in module.modules() if isinstance(m, nn.Linear)]


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _layer_norm(x: np.ndarray, norm: nn.LayerNorm) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + norm.eps) * _f64(norm.weight) + _f64(norm.bias)


def _din_reference(unit: TargetAttention, q: np.ndarray, keys: np.ndarray, normalize: bool) -> np.ndarray:
    """DIN pooling of one row's n valid keys ``[n, D]`` by candidate ``q [D]``."""
    if len(keys) == 0:
        return np.zeros_like(q)
    linears = _linears(unit)
    scores = []
    for k in keys:
        h = np.concatenate([q, k, q - k, q * k])
        for w, b in linears[:-1]:
            h = np.maximum(w @ h + b, 0.0)
        w, b = linears[-1]
        scores.append((w @ h + b)[0])
    weights = _softmax(np.array(scores)) if normalize else np.array(scores)
    return weights @ keys


def _perturb(module: nn.Module, seed: int) -> None:
    """Random values for every parameter, LayerNorm gains and biases included."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def _batch(lengths: list[int], length: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    b = len(lengths)
    query = torch.randn(b, D, generator=gen, dtype=torch.float64)
    keys = torch.randn(b, length, D, generator=gen, dtype=torch.float64)
    return query, keys, torch.tensor(lengths, dtype=torch.int64)


@pytest.mark.parametrize("hidden", [[6, 3], []])
@pytest.mark.parametrize("normalize", [True, False])
def test_target_attention_matches_a_per_row_float64_reference(normalize, hidden):
    """The reference builds ``[q, k, q - k, q * k]`` per slot, as DIN's unit reads it (the
    module splits its first layer instead, with a linear score when ``hidden`` is empty)."""
    torch.manual_seed(0)
    unit = TargetAttention(embedding_dim=D, hidden_dims=hidden, normalize=normalize).double()
    query, keys, lengths = _batch([0, 5, 2, 1, 5, 3], length=5)
    out = _f64(unit(query, keys, lengths))
    for b, n in enumerate(lengths.tolist()):
        expected = _din_reference(unit, _f64(query[b]), _f64(keys[b, :n]), normalize)
        np.testing.assert_allclose(out[b], expected, atol=1e-12)


def test_unnormalised_weights_are_the_raw_scores_not_a_softmax():
    torch.manual_seed(1)
    unit = TargetAttention(embedding_dim=D, hidden_dims=[], normalize=False).double()
    query, _, _ = _batch([1], length=1)
    key = torch.randn(1, 1, D, dtype=torch.float64)
    # One key: a softmax would return the key itself; DIN's raw weight scales it by its score.
    (w, b), = _linears(unit)
    k, q = _f64(key[0, 0]), _f64(query[0])
    score = (w @ np.concatenate([q, k, q - k, q * k]) + b)[0]
    out = _f64(unit(query, key, torch.tensor([1])))[0]
    np.testing.assert_allclose(out, score * k, atol=1e-12)
    assert not np.allclose(out, k)
    # Twice the same key doubles the pooled vector: the weights do not sum to one.
    doubled = _f64(unit(query, key.expand(1, 2, D), torch.tensor([2])))[0]
    np.testing.assert_allclose(doubled, 2 * out, atol=1e-12)


@pytest.mark.parametrize("make", [
    lambda: TargetAttention(embedding_dim=D, hidden_dims=[5], normalize=True),
    lambda: TargetAttention(embedding_dim=D, hidden_dims=[5], normalize=False),
    lambda: SequenceEncoder(embedding_dim=D, num_heads=2, num_layers=2, max_len=4, ffn_dim=6,
                            attention_hidden_dims=[5]),
])
def test_empty_rows_are_exact_zeros_with_finite_gradients(make):
    torch.manual_seed(2)
    module = make()
    query = torch.randn(3, D, requires_grad=True)
    keys = torch.randn(3, 4, D)
    keys[0] = float("nan")  # an empty row's padding content must not leak anywhere
    keys[2, 3:] = float("nan")
    keys.requires_grad_(True)
    lengths = torch.tensor([0, 4, 3])
    out = module(query, keys, lengths)
    assert torch.equal(out[0], torch.zeros(D))
    assert torch.isfinite(out).all()
    out.pow(2).sum().backward()
    grads = [query.grad, keys.grad] + [p.grad for p in module.parameters() if p.grad is not None]
    assert all(torch.isfinite(g).all() for g in grads)
    assert torch.equal(query.grad[0], torch.zeros(D))
    assert torch.equal(keys.grad[0], torch.zeros(4, D))
    assert torch.equal(keys.grad[2, 3], torch.zeros(D))
    assert keys.grad[1].abs().sum() > 0


@pytest.mark.parametrize("lengths, max_len", [
    ([3, 0, 1, 6, 2], 4),  # 6 > 4: the row keeps its 4 most recent items
    ([0, 0], 3),  # N = 0
    ([2, 2, 2], 2),
])
def test_jagged_to_padded_matches_a_loop(lengths, max_len):
    values = torch.randn(sum(lengths), D)
    padded = jagged_to_padded(values, torch.tensor(lengths), max_len)
    expected = torch.zeros(len(lengths), max_len, D)
    start = 0
    for b, n in enumerate(lengths):
        row = values[start:start + n][-max_len:] if n else values[:0]
        expected[b, :len(row)] = row
        start += n
    assert torch.equal(padded, expected)


def test_length_mask_and_recency_positions_match_loops():
    lengths = [0, 1, 3, 5]
    mask = length_mask(torch.tensor(lengths), 4)
    positions = recency_positions(torch.tensor(lengths), 4)
    for b, n in enumerate(lengths):
        kept = min(n, 4)
        assert mask[b].tolist() == [i < n for i in range(4)]
        # The most recent item (the last valid slot) is position 0.
        assert positions[b, :kept].tolist() == list(range(kept - 1, -1, -1))


def test_masked_softmax_is_a_softmax_over_the_valid_slots_and_zero_on_empty_lines():
    scores = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, False, True, True], [False] * 4, [True] * 4])
    weights = masked_softmax(scores, mask)
    for row in range(3):
        valid = _f64(mask[row]).astype(bool)
        expected = np.zeros(4)
        if valid.any():
            expected[valid] = _softmax(_f64(scores[row])[valid])
        np.testing.assert_allclose(_f64(weights[row]), expected, atol=1e-15)
    (weights * torch.randn(3, 4, dtype=torch.float64)).sum().backward()
    assert torch.isfinite(scores.grad).all()
    assert torch.equal(scores.grad[1], torch.zeros(4, dtype=torch.float64))


def _encoder_reference(encoder: SequenceEncoder, q: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """BST blocks then DIN on one row's n valid keys ``[n, D]``, written out in float64."""
    n = len(keys)
    if n == 0:
        return np.zeros_like(q)
    x = keys + _f64(encoder.positions.weight)[np.arange(n - 1, -1, -1)]
    for block in encoder.blocks:
        (w_qkv, b_qkv), (w_out, b_out), (w1, b1), (w2, b2) = _linears(block)
        h = block.num_heads
        qkv = x @ w_qkv.T + b_qkv  # [n, 3D]
        heads = []
        for head in range(h):
            width = D // h
            cols = slice(head * width, (head + 1) * width)
            hq, hk, hv = (qkv[:, part * D:(part + 1) * D][:, cols] for part in range(3))
            heads.append(_softmax(hq @ hk.T / np.sqrt(width)) @ hv)
        x = _layer_norm(x + np.concatenate(heads, axis=1) @ w_out.T + b_out, block.attention_norm)
        hidden = x @ w1.T + b1
        hidden = np.where(hidden > 0, hidden, 0.01 * hidden)  # LeakyReLU's default slope
        x = _layer_norm(x + hidden @ w2.T + b2, block.ffn_norm)
    return _din_reference(encoder.target_attention, q, x, encoder.target_attention.normalize)


@pytest.mark.parametrize("normalize", [True, False])
def test_encoder_matches_a_float64_reference_from_its_own_weights(normalize):
    torch.manual_seed(3)
    encoder = SequenceEncoder(embedding_dim=D, num_heads=2, num_layers=2, max_len=6, ffn_dim=6,
                              attention_hidden_dims=[5], normalize=normalize).double().eval()
    _perturb(encoder, seed=3)
    query, keys, lengths = _batch([3, 5, 1, 0], length=5, seed=3)
    out = _f64(encoder(query, keys, lengths))
    for b, n in enumerate(lengths.tolist()):
        expected = _encoder_reference(encoder, _f64(query[b]), _f64(keys[b, :n]))
        np.testing.assert_allclose(out[b], expected, atol=1e-10)


def test_encoder_rows_ignore_padding_content_and_padding_slots():
    torch.manual_seed(4)
    encoder = SequenceEncoder(embedding_dim=D, num_heads=2, num_layers=2, max_len=6, ffn_dim=8,
                              attention_hidden_dims=[5]).double().eval()
    _perturb(encoder, seed=4)
    query, keys, lengths = _batch([6, 2, 0, 4], length=6, seed=4)
    out = encoder(query, keys, lengths)
    noisy = keys.clone()
    noisy[~length_mask(lengths, 6)] = float("nan")
    torch.testing.assert_close(encoder(query, noisy, lengths), out, rtol=0, atol=0)
    # Each row alone, without any padding slot, gives the same vector as inside the batch.
    for b, n in enumerate(lengths.tolist()):
        alone = encoder(query[b:b + 1], keys[b:b + 1, :max(n, 1)], lengths[b:b + 1])
        torch.testing.assert_close(alone[0], out[b], rtol=1e-12, atol=1e-12)


def test_the_most_recent_item_is_position_zero_whatever_the_length():
    """Without self-attention and with raw DIN weights the output is ``sum_i f(item_i, pos_i)``.

    If positions count back from the most recent item, prepending x to [y] or to [z] puts x
    at position 1 and leaves y and z at 0, so x adds the same vector in both cases. Counting
    positions from the oldest item would move y and z and break the equality.
    """
    torch.manual_seed(5)
    encoder = SequenceEncoder(embedding_dim=D, num_heads=1, num_layers=0, max_len=3, ffn_dim=4,
                              attention_hidden_dims=[6], normalize=False).double()
    _perturb(encoder, seed=5)
    x, y, z = torch.randn(3, D, dtype=torch.float64)
    pad = torch.zeros(D, dtype=torch.float64)
    keys = torch.stack([torch.stack(row) for row in ([x, y], [y, pad], [x, z], [z, pad])])
    out = encoder(torch.randn(1, D, dtype=torch.float64).expand(4, D), keys, torch.tensor([2, 1, 2, 1]))
    torch.testing.assert_close(out[0] - out[1], out[2] - out[3], rtol=0, atol=1e-12)
    assert (out[0] - out[1] - out[2]).abs().max() > 1e-3  # x's vector depends on its position


def _export(module: nn.Module, max_len: int) -> nn.Module:
    batch = torch.export.Dim("batch", min=1, max=1024)
    slots = torch.export.Dim("slots", min=1, max=max_len)
    example = (torch.randn(4, D), torch.randn(4, 5, D), torch.tensor([5, 0, 2, 3]))
    shapes = {"query": {0: batch}, "keys": {0: batch, 1: slots}, "lengths": {0: batch}}
    return torch.export.export(module, example, dynamic_shapes=shapes).module()


@pytest.mark.parametrize("make", [
    lambda: TargetAttention(embedding_dim=D, hidden_dims=[5], normalize=True),
    lambda: TargetAttention(embedding_dim=D, hidden_dims=[5], normalize=False),
    lambda: SequenceEncoder(embedding_dim=D, num_heads=2, num_layers=2, max_len=6, ffn_dim=8,
                            attention_hidden_dims=[5]),
])
def test_export_with_dynamic_batch_and_length_matches_eager(make):
    torch.manual_seed(6)
    module = make().eval()
    exported = _export(module, max_len=6)
    gen = torch.Generator().manual_seed(6)
    for batch, length in [(1, 1), (3, 6), (7, 4), (3, 2)]:
        lengths = torch.randint(0, length + 1, (batch,), generator=gen)
        lengths[0] = 0
        lengths[-1] = length if batch > 1 else 0
        query, keys = torch.randn(batch, D, generator=gen), torch.randn(batch, length, D, generator=gen)
        got = exported(query, keys, lengths)
        torch.testing.assert_close(got, module(query, keys, lengths), rtol=1e-5, atol=1e-6)
        assert torch.equal(got[0], torch.zeros(D))


class _Padder(nn.Module):
    def forward(self, values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return jagged_to_padded(values, lengths, 4)


def test_jagged_to_padded_exports_with_dynamic_batch_and_total_length():
    total = torch.export.Dim("total", min=0, max=1 << 20)
    batch = torch.export.Dim("batch", min=1, max=1024)
    example = (torch.randn(7, D), torch.tensor([2, 0, 5]))
    exported = torch.export.export(_Padder(), example,
                                   dynamic_shapes={"values": {0: total}, "lengths": {0: batch}}).module()
    for lengths in ([0], [1], [0, 0, 0], [4, 0, 9, 1, 2, 0, 3]):
        values = torch.randn(sum(lengths), D)
        lengths_t = torch.tensor(lengths)
        assert torch.equal(exported(values, lengths_t), jagged_to_padded(values, lengths_t, 4))


def test_encoder_refuses_more_slots_than_max_len():
    encoder = SequenceEncoder(embedding_dim=D, num_heads=2, num_layers=1, max_len=3, ffn_dim=4,
                              attention_hidden_dims=[])
    with pytest.raises(RuntimeError, match="max_len 3"):
        encoder(torch.randn(2, D), torch.randn(2, 4, D), torch.tensor([4, 1]))
