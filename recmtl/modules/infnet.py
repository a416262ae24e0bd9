"""INFNet (Information Flow Network): categorical, sequence and task tokens exchanging
information through a few proxy tokens, cost linear in the number of tokens.

Token types: categorical (one per pooled sparse feature, the dot products, each dense float),
sequence (one per history item, masked where padded) and task (one learned token per task).
Each feature type has ``num_proxies`` proxy tokens (learned, carried from block to block);
the task tokens are their own proxies. A block:

1. gather: each type's proxies read their own type's tokens,
   ``p_s += Attn(p_s, x_s)`` (padding masked);
2. heterogeneous flow: each type's tokens read the other types' proxies and the task tokens,
   ``x_s += Attn(x_s, [p_o for o != s] + [task])``, and the task tokens read every feature
   type's proxies (``task_reads="proxies"``) or all their tokens (``"tokens"``);
3. homogeneous flow: a type-specific Proxy Gated Unit per type,
   ``x += W_o(GELU(W_u LN(x)) * sigmoid(W_g mean(p)))``, its gate drawn from the type's
   proxies (for the task tokens, their mean), so each token mixes in its own type's summary.

Attention is pre-norm (LayerNorm on both sides), multi-head, softmax over the valid keys. With
N tokens and P proxies per type a block costs O(N P), never O(N^2). Each task's prediction
reads its final (layer-normed) task token.

Readings where the paper leaves details open (also in the classes): proxies are learned
tokens updated by attention over their type (not pooled means); no positions on sequence
tokens (a history is a set here, as in DIN's pooling); the PGU's gate reads the mean of the
type's proxies; dense floats are categorical tokens; ``task_reads`` is a flag.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from recmtl.modules.sequence import length_mask, masked_softmax
from recmtl.modules.tokens import FeatureTokenizer


class CrossAttention(nn.Module):
    """Pre-norm multi-head attention: ``q [B, Nq, D], kv [B, Nk, D], key_mask [B, Nk] | None ->
    [B, Nq, D]`` (the residual branch; the caller adds it). A query with no valid key gets
    zeros.

    Args:
        dim: D, a multiple of ``num_heads``.
        num_heads: H.
    """

    def __init__(self, *, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not a multiple of num_heads {num_heads}")
        self.num_heads = num_heads
        self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, q: torch.Tensor, kv: torch.Tensor,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, nq, d = q.shape
        h = self.num_heads

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(b, x.shape[1], h, d // h).transpose(1, 2)  # [B, H, N, D / H]

        kv = self.norm_kv(kv)
        qh, kh, vh = heads(self.q(self.norm_q(q))), heads(self.k(kv)), heads(self.v(kv))
        scores = qh @ kh.transpose(-1, -2) / math.sqrt(d // h)  # [B, H, Nq, Nk]
        if key_mask is None:
            weights = torch.softmax(scores, dim=-1)
        else:
            weights = masked_softmax(scores, key_mask[:, None, None, :])
        return self.out((weights @ vh).transpose(1, 2).reshape(b, nq, d))


class ProxyGatedUnit(nn.Module):
    """A type's homogeneous flow: ``x [B, N, D], proxies [B, P, D] -> [B, N, D]`` (the residual
    branch), ``W_o(GELU(W_u LN(x)) * sigmoid(W_g mean_p(proxies)))``.

    Args:
        dim: D.
        hidden: the unit's hidden width.
    """

    def __init__(self, *, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, hidden)
        self.gate = nn.Linear(dim, hidden)
        self.down = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, proxies: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.gate(proxies.mean(dim=1, keepdim=True)))  # [B, 1, hidden]
        return self.down(nn.functional.gelu(self.up(self.norm(x))) * gate)


class INFNetBlock(nn.Module):
    """One block over ``types`` (feature token types, e.g. ``["cat", "seq"]``) and the task
    tokens. ``forward(tokens, masks, proxies, task)`` with ``tokens[s] [B, N_s, D]``,
    ``masks[s] [B, N_s] | None``, ``proxies[s] [B, P, D]``, ``task [B, T, D]``; returns the
    three updated.

    Args:
        types: the feature token types present.
        dim: D.
        num_heads: heads of every attention.
        hidden: the Proxy Gated Units' hidden width.
        task_reads: ``"proxies"`` (the task tokens read the feature types' proxies) or
            ``"tokens"`` (all their tokens; still linear in N, as T is small).
    """

    def __init__(self, *, types: list[str], dim: int, num_heads: int, hidden: int,
                 task_reads: str = "tokens") -> None:
        super().__init__()
        if task_reads not in ("proxies", "tokens"):
            raise ValueError(f"task_reads must be 'proxies' or 'tokens', got {task_reads!r}")
        self.types = list(types)
        self.task_reads = task_reads
        self.gather = nn.ModuleDict({s: CrossAttention(dim=dim, num_heads=num_heads) for s in types})
        self.flow = nn.ModuleDict({s: CrossAttention(dim=dim, num_heads=num_heads)
                                   for s in [*types, "task"]})
        self.pgu = nn.ModuleDict({s: ProxyGatedUnit(dim=dim, hidden=hidden)
                                  for s in [*types, "task"]})

    def forward(self, tokens: dict[str, torch.Tensor], masks: dict[str, torch.Tensor | None],
                proxies: dict[str, torch.Tensor], task: torch.Tensor
                ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
        proxies = {s: p + self.gather[s](p, tokens[s], masks[s]) for s, p in proxies.items()}
        flowed = {}
        for s in self.types:
            others = torch.cat([proxies[o] for o in self.types if o != s] + [task], dim=1)
            flowed[s] = tokens[s] + self.flow[s](tokens[s], others)
        if self.task_reads == "proxies":
            task = task + self.flow["task"](task, torch.cat([proxies[s] for s in self.types], 1))
        else:
            read = torch.cat([tokens[s] for s in self.types], dim=1)
            valid = [masks[s] if masks[s] is not None else
                     torch.ones(tokens[s].shape[:2], dtype=torch.bool, device=task.device)
                     for s in self.types]
            task = task + self.flow["task"](task, read, torch.cat(valid, dim=1))  # type: ignore[arg-type]
        flowed = {s: x + self.pgu[s](x, proxies[s]) for s, x in flowed.items()}
        task = task + self.pgu["task"](task, task)
        return flowed, proxies, task


class INFNet(nn.Module):
    """``[B, in] -> [T, B, dim]``: the backbone, on the usual flat input.

    The input holds column blocks (pooled sparse features, the dot products), sequence blocks
    and single columns (dense floats), in that order of appearance given by ``block_widths``,
    ``sequence_blocks`` and ``num_scalars``: a sequence block ``i`` holds ``L`` slots of
    ``D + 1`` columns (an item's embedding and its validity, 1 or 0; see ``SequenceTokens``)
    with ``(L, D) = sequence_blocks[i]``. Categorical tokens come from a ``FeatureTokenizer``
    over the other blocks and the scalars; each sequence's items are projected by their own
    linear map ``D -> dim``; the sequences' tokens then form one sequence type.

    Args:
        block_widths: widths of the leading column blocks (sequence blocks among them).
        sequence_blocks: ``{block index: (L, D)}``.
        num_scalars: trailing single columns.
        num_tasks: T.
        dim: token width.
        num_layers: blocks.
        num_heads: heads per attention.
        num_proxies: P, proxies per feature type.
        hidden: the Proxy Gated Units' hidden width.
        task_reads: see ``INFNetBlock``.

    Example:
        >>> net = INFNet(block_widths=[4, 3 * 5, 4], sequence_blocks={1: (3, 4)}, num_scalars=2,
        ...              num_tasks=2, dim=8, num_layers=1, num_heads=2, num_proxies=2, hidden=16)
        >>> net(torch.randn(6, 25)).shape
        torch.Size([2, 6, 8])
    """

    def __init__(self, *, block_widths: list[int], sequence_blocks: dict[int, tuple[int, int]],
                 num_scalars: int, num_tasks: int, dim: int, num_layers: int, num_heads: int,
                 num_proxies: int, hidden: int, task_reads: str = "tokens") -> None:
        super().__init__()
        for i, (length, d) in sequence_blocks.items():
            if block_widths[i] != length * (d + 1):
                raise ValueError(f"sequence block {i} is {block_widths[i]} wide, not "
                                 f"{length} x ({d} + 1)")
        self.block_widths = list(block_widths)
        self.sequence_blocks = dict(sequence_blocks)
        self.tokenizer = FeatureTokenizer(
            block_widths=[w for i, w in enumerate(block_widths) if i not in sequence_blocks],
            num_scalars=num_scalars, dim=dim)
        self.item_maps = nn.ModuleDict({str(i): nn.Linear(d, dim)
                                        for i, (_, d) in sequence_blocks.items()})
        self.types = ["cat", "seq"] if sequence_blocks else ["cat"]
        self.proxies = nn.ParameterDict({s: nn.Parameter(torch.randn(num_proxies, dim) * 0.02)
                                         for s in self.types})
        self.task_tokens = nn.Parameter(torch.randn(num_tasks, dim) * 0.02)
        self.blocks = nn.ModuleList(
            INFNetBlock(types=self.types, dim=dim, num_heads=num_heads, hidden=hidden,
                        task_reads=task_reads) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)
        self.in_features = sum(block_widths) + num_scalars
        self.output_dim = dim

    def tokens(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor | None]]:
        """``[B, in] ->`` (tokens per type ``[B, N_s, dim]``, masks per type ``[B, N_s]``)."""
        b, width = x.shape[0], sum(self.block_widths)
        parts = x[:, :width].split(self.block_widths, dim=1)
        cat = [p for i, p in enumerate(parts) if i not in self.sequence_blocks]
        tokens = {"cat": self.tokenizer(torch.cat([*cat, x[:, width:]], dim=1))}
        masks: dict[str, torch.Tensor | None] = {"cat": None}
        if self.sequence_blocks:
            items, valid = [], []
            for i, (length, d) in self.sequence_blocks.items():
                slots = parts[i].reshape(b, length, d + 1)
                items.append(self.item_maps[str(i)](slots[..., :d]))
                valid.append(slots[..., d] > 0.5)
            tokens["seq"], masks["seq"] = torch.cat(items, dim=1), torch.cat(valid, dim=1)
        return tokens, masks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, masks = self.tokens(x)
        b = x.shape[0]
        proxies = {s: p.to(x.dtype).unsqueeze(0).expand(b, -1, -1) for s, p in self.proxies.items()}
        task = self.task_tokens.to(x.dtype).unsqueeze(0).expand(b, -1, -1)
        for block in self.blocks:
            tokens, proxies, task = block(tokens, masks, proxies, task)
        return self.norm(task).transpose(0, 1)


class SequenceTokens(nn.Module):
    """A history handed on as tokens (INFNet reads them): ``query [B, D], keys [B, L, D],
    lengths [B] -> [B, L * (D + 1)]``, slot i as its embedding (zeros where padded) and a
    validity column (1 where ``i < lengths[b]``). The query is not used here: INFNet relates
    the candidate's categorical token to the items by attention.

    Example:
        >>> SequenceTokens(embedding_dim=2, max_len=3)(
        ...     torch.zeros(1, 2), torch.ones(1, 3, 2), torch.tensor([2])).tolist()
        [[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]]
    """

    def __init__(self, *, embedding_dim: int, max_len: int) -> None:
        super().__init__()
        self.max_len = max_len
        self.output_dim = max_len * (embedding_dim + 1)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        torch._check(keys.shape[1] == self.max_len, lambda: f"expected {self.max_len} slots")
        mask = length_mask(lengths, keys.shape[1]).unsqueeze(-1)
        slots = torch.cat([keys.masked_fill(~mask, 0.0), mask.to(keys.dtype)], dim=-1)
        return slots.reshape(keys.shape[0], self.output_dim)
