"""User-behaviour sequences: padding helpers, DIN target attention, a BST encoder.

Layout of a history. A user's history arrives jagged, oldest item first: ``values [N, D]``
holds the B rows back to back and ``lengths [B]`` their sizes (N = sum of lengths, 0 allowed).
``jagged_to_padded`` turns it into ``[B, L, D]`` rows that stay oldest-first and
left-aligned: row b holds its items at ``0 .. n_b - 1`` (the most recent at ``n_b - 1``)
and zeros after. A row longer than L keeps its L most recent items, so a length above L
means "all L slots are valid" to every function here.

Positions count recency: slot i of a row of length n has position ``n - 1 - i``, so the
most recent item is position 0 whatever the row's length, and an item keeps its position
when older items are added or dropped.

Nothing here loops over rows in Python and every function traces under ``torch.export``
with a dynamic batch, a dynamic L (padded inputs) and a dynamic N (jagged inputs).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from recmtl.modules.mlp import MLP


def length_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """``lengths [B] -> bool [B, max_len]``, True on a row's valid slots ``i < lengths[b]``.

    Example:
        >>> length_mask(torch.tensor([2, 0, 3]), 3)
        tensor([[ True,  True, False],
                [False, False, False],
                [ True,  True,  True]])
    """
    slots = torch.arange(max_len, device=lengths.device)
    return slots.unsqueeze(0) < lengths.unsqueeze(1)


def recency_positions(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """``lengths [B] -> int64 [B, max_len]``: slot i of a row of length n is position
    ``n - 1 - i`` (0 = most recent); padding slots read 0 (they are masked anyway).

    Example:
        >>> recency_positions(torch.tensor([3, 1, 0]), 4)
        tensor([[2, 1, 0, 0],
                [0, 0, 0, 0],
                [0, 0, 0, 0]])
    """
    kept = lengths.clamp(max=max_len).unsqueeze(1)
    slots = torch.arange(max_len, device=lengths.device).unsqueeze(0)
    return (kept - 1 - slots).clamp(min=0)


def jagged_to_padded(values: torch.Tensor, lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """``values [N, D]`` (rows back to back), ``lengths [B] -> [B, max_len, D]``, left-aligned.

    Padding slots are exact zeros; a row longer than ``max_len`` keeps its last (most recent)
    ``max_len`` items. One gather from a ``[B, max_len]`` index grid, so B and N stay dynamic
    under ``torch.export`` (fbgemm's ``jagged_to_padded_dense`` exports too, but it keeps the
    oldest items of a long row and ties the exported program to fbgemm's library).

    Example:
        >>> values = torch.arange(5.0).unsqueeze(1)  # rows [0, 1], [], [2, 3, 4]
        >>> jagged_to_padded(values, torch.tensor([2, 0, 3]), 2).squeeze(-1)
        tensor([[0., 1.],
                [0., 0.],
                [3., 4.]])
    """
    kept = lengths.clamp(max=max_len)
    starts = torch.cumsum(lengths, dim=0) - kept  # first kept item of each row in values
    slots = torch.arange(max_len, device=values.device).unsqueeze(0)
    # values gains a zero row in front (index 0), which every padding slot reads: no
    # out-of-range index even when N is 0, and no N-sized scalar in the traced graph.
    index = torch.where(slots < kept.unsqueeze(1), starts.unsqueeze(1) + slots + 1, 0)
    with_zero = nn.functional.pad(values, (0, 0, 1, 0))
    return with_zero[index]


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax of ``scores`` over ``dim`` restricted to ``mask``; all-masked lines give zeros.

    The masked scores become the dtype's lowest finite value rather than -inf, so an
    all-masked line softmaxes to a finite uniform vector, which the final ``* mask`` zeroes;
    its gradient is zero too, never NaN.

    Example:
        >>> masked_softmax(torch.zeros(2, 2), torch.tensor([[True, True], [False, False]]))
        tensor([[0.5000, 0.5000],
                [0.0000, 0.0000]])
    """
    lowest = torch.finfo(scores.dtype).min
    weights = torch.softmax(scores.masked_fill(~mask, lowest), dim=dim)
    return weights * mask.to(weights.dtype)


class TargetAttention(nn.Module):
    """DIN's local activation unit (Zhou et al., KDD 2018): the history pooled by its
    relevance to the candidate. ``query [B, D], keys [B, L, D], lengths [B] -> [B, D]``.

    Slot i scores ``a_i = Linear(MLP([q, k_i, q - k_i, q * k_i]))``, a scalar (the released
    DIN code's inputs; the MLP is ReLU). The output is ``sum_i w_i k_i`` over the valid
    slots, with ``w = masked softmax(a)`` when ``normalize`` and ``w_i = a_i`` otherwise,
    which is the paper's choice (Sec. 4.3): the softmax is dropped so that the pooled
    vector's norm keeps how strongly the history as a whole matches the candidate. A row of
    length 0 gives exact zeros either way, and padding content (even NaN) never reaches the
    output or the gradients.

    Args:
        embedding_dim: D, the width of the query and of every key.
        hidden_dims: widths of the attention unit's hidden layers (may be empty: a linear score).
        normalize: softmax over the valid slots (True) or the paper's raw weights (False).

    Example:
        >>> unit = TargetAttention(embedding_dim=4, hidden_dims=[8])
        >>> unit(torch.randn(3, 4), torch.randn(3, 5, 4), torch.tensor([5, 0, 2])).shape
        torch.Size([3, 4])
    """

    def __init__(self, embedding_dim: int, hidden_dims: list[int] | tuple[int, ...],
                 normalize: bool = True) -> None:
        super().__init__()
        self.hidden = MLP(in_features=4 * embedding_dim, layer_sizes=hidden_dims)
        self.score = nn.Linear(self.hidden.output_dim, 1)
        self.normalize = normalize
        self.output_dim = embedding_dim

    def forward(self, query: torch.Tensor, keys: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = length_mask(lengths, keys.shape[1])  # [B, L]
        keys = keys.masked_fill(~mask.unsqueeze(-1), 0.0)
        scores = self.scores(query, keys)  # [B, L]
        if self.normalize:
            weights = masked_softmax(scores, mask)
        else:
            weights = scores.masked_fill(~mask, 0.0)
        return torch.bmm(weights.unsqueeze(1), keys).squeeze(1)

    def scores(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """``a [B, L]``: the unit on ``[q, k, q - k, q * k]`` without building that
        ``[B, L, 4D]`` input. The first layer ``W = [W_q | W_k | W_d | W_p]`` is linear, so
        ``W [q, k, q - k, q * k] = (W_q + W_d) q + [W_k - W_d | W_p] [k, q * k]``: the query's
        part is computed once per row, and each slot costs a ``2D -> H`` product instead of a
        ``4D -> H`` one (about half the unit's work at DIN's sizes, forward and backward)."""
        layers = list(self.hidden.layers)
        first = layers[0] if layers else self.score
        assert isinstance(first, nn.Linear)
        w_q, w_k, w_d, w_p = first.weight.split(query.shape[-1], dim=1)
        per_row = query @ (w_q + w_d).T + first.bias  # [B, H]
        per_slot = torch.cat([keys, query.unsqueeze(1) * keys], dim=-1) @ torch.cat(
            [w_k - w_d, w_p], dim=1).T  # [B, L, H]
        h = per_slot + per_row.unsqueeze(1)
        if not layers:
            return h.squeeze(-1)
        for layer in layers[1:]:
            h = layer(h)
        return self.score(h).squeeze(-1)


class SelfAttentionBlock(nn.Module):
    """One post-norm transformer block as in BST: ``x [B, L, D], key_mask bool [B, L] ->
    [B, L, D]``.

    ``x = LayerNorm(x + Dropout(MultiHead(x)))``, then
    ``x = LayerNorm(x + Dropout(W2 LeakyReLU(W1 x)))``. Attention reads only the slots where
    ``key_mask`` is True; a line with no True slot must not reach this block (see
    ``SequenceEncoder``), as its softmax would have nothing to normalise.

    Args:
        embedding_dim: D, a multiple of ``num_heads``.
        num_heads: H; each head has width D / H.
        ffn_dim: hidden width of the feed-forward layer.
        dropout: on the attention weights and after each sub-layer (training only).
    """

    def __init__(self, embedding_dim: int, num_heads: int, ffn_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        if embedding_dim % num_heads:
            raise ValueError(f"embedding_dim {embedding_dim} is not a multiple of num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(embedding_dim, 3 * embedding_dim)
        self.out = nn.Linear(embedding_dim, embedding_dim)
        self.attention_norm = nn.LayerNorm(embedding_dim)
        self.ffn = nn.Sequential(nn.Linear(embedding_dim, ffn_dim), nn.LeakyReLU(),
                                 nn.Linear(ffn_dim, embedding_dim))
        self.ffn_norm = nn.LayerNorm(embedding_dim)
        self.dropout = nn.Dropout(dropout)
        self.output_dim = embedding_dim

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        heads = self.qkv(x).view(b, length, 3, self.num_heads, d // self.num_heads)
        q, k, v = heads.permute(2, 0, 3, 1, 4)  # each [B, H, L, D / H]
        attended = nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=key_mask[:, None, None, :],
            dropout_p=self.dropout.p if self.training else 0.0)
        attended = attended.transpose(1, 2).reshape(b, length, d)
        x = self.attention_norm(x + self.dropout(self.out(attended)))
        return self.ffn_norm(x + self.dropout(self.ffn(x)))


class SequenceEncoder(nn.Module):
    """Behaviour Sequence Transformer (Chen et al., 2019) pooled by DIN target attention.
    ``query [B, D], keys [B, L, D], lengths [B] -> [B, D]`` with ``L <= max_len``.

    Keys are padded oldest-first and left-aligned (see the module docstring); slot i of a row
    of length n gets the learned embedding of its recency position ``n - 1 - i`` added (the
    paper embeds the time since the click; a recency rank needs no timestamps). ``num_layers``
    self-attention blocks then mix the valid slots (padding never attends nor is attended
    to), and ``TargetAttention`` pools them with the candidate as query. The paper
    concatenates the candidate into the transformer's sequence instead; pooling by target
    attention keeps one ``[B, D]`` output per candidate. Rows of length 0 give exact zeros.

    Args:
        embedding_dim: D.
        num_heads: attention heads per block (a divisor of D).
        num_layers: transformer blocks (0: target attention over position-aware keys).
        max_len: the largest L accepted; rows of ``lengths`` above L count as L.
        ffn_dim: hidden width of each block's feed-forward layer.
        dropout: dropout of the blocks (training only).
        attention_hidden_dims: hidden widths of the target attention unit.
        normalize: softmax target attention (True) or DIN's raw weights (False).

    Example:
        >>> encoder = SequenceEncoder(embedding_dim=4, num_heads=2, num_layers=1, max_len=6,
        ...                           ffn_dim=8, attention_hidden_dims=[8])
        >>> encoder(torch.randn(3, 4), torch.randn(3, 6, 4), torch.tensor([6, 0, 2])).shape
        torch.Size([3, 4])
    """

    def __init__(self, embedding_dim: int, num_heads: int, num_layers: int, max_len: int,
                 ffn_dim: int, attention_hidden_dims: list[int] | tuple[int, ...],
                 dropout: float = 0.0, normalize: bool = True) -> None:
        super().__init__()
        self.max_len = max_len
        self.positions = nn.Embedding(max_len, embedding_dim)
        nn.init.normal_(self.positions.weight, std=1.0 / math.sqrt(embedding_dim))
        self.blocks = nn.ModuleList(
            SelfAttentionBlock(embedding_dim=embedding_dim, num_heads=num_heads, ffn_dim=ffn_dim,
                               dropout=dropout) for _ in range(num_layers))
        self.target_attention = TargetAttention(embedding_dim=embedding_dim,
                                                hidden_dims=attention_hidden_dims,
                                                normalize=normalize)
        self.output_dim = embedding_dim

    def forward(self, query: torch.Tensor, keys: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        length = keys.shape[1]
        torch._check(length <= self.max_len, lambda: f"keys hold more slots than max_len "
                     f"{self.max_len}")
        mask = length_mask(lengths, length)  # [B, L]
        x = keys.masked_fill(~mask.unsqueeze(-1), 0.0) + self.positions(
            recency_positions(lengths, length))
        # An empty row leaves its attention softmax nothing to normalise. torch 2.13's SDPA
        # returns zeros there (eager, decomposed, ONNX), but not every kernel promises it, so
        # the row attends to its first (zeroed) slot instead; target attention still masks by
        # the true lengths, and the row's output stays exactly zero.
        first_slot = torch.arange(length, device=mask.device) == 0
        key_mask = mask | ((lengths <= 0).unsqueeze(1) & first_slot)
        for block in self.blocks:
            x = block(x, key_mask)
        return self.target_attention(query, x, lengths)
