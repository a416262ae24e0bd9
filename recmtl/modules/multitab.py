"""MultiTab-Net reading: a transformer over feature tokens with one learned token per task.

The sequence is ``[task_1 .. task_T, feature_1 .. feature_F]``. Multitask masked attention keeps
the tasks apart inside the shared blocks:

- a task token attends to every feature token and to itself, never to another task token;
- a feature token attends to the feature tokens, and to the task tokens only with
  ``features_see_tasks=True``.

With the default mask the feature stream never reads a task token, so task j's token cannot
reach task i's output: each task is a separate "CLS" readout of the same feature transformer.
With ``features_see_tasks=True`` the tasks exchange information through the features.

Blocks are pre-norm (``x + Attn(LN(x))``, ``x + FFN(LN(x))``, FFN = Linear-GELU-Linear), and a
final LayerNorm is applied to the task tokens; with T = 1 and ``features_see_tasks=True`` the
mask allows everything and the module is a plain pre-norm transformer encoder reading
``[task token, features]``.

``MultiTab`` is the backbone the builder makes: a ``FeatureTokenizer`` in front of the
transformer, so that it reads the same flat ``[B, in]`` input as MMoE.
"""

from __future__ import annotations

import torch
from torch import nn

from recmtl.modules.tokens import FeatureTokenizer


def multitask_attention_mask(num_tasks: int, num_features: int,
                             features_see_tasks: bool = False) -> torch.Tensor:
    """``[T + F, T + F]`` bool, True where query row may attend to key column (tasks first).

    Example:
        >>> multitask_attention_mask(2, 1).int().tolist()
        [[1, 0, 1], [0, 1, 1], [0, 0, 1]]
    """
    n = num_tasks + num_features
    mask = torch.zeros(n, n, dtype=torch.bool)
    mask[:num_tasks, :num_tasks] = torch.eye(num_tasks, dtype=torch.bool)
    mask[:, num_tasks:] = True
    if features_see_tasks:
        mask[num_tasks:, :num_tasks] = True
    return mask


class MaskedTransformerBlock(nn.Module):
    """Pre-norm transformer block with a fixed boolean attention mask: ``[B, N, D] -> [B, N, D]``.

    Args:
        dim: token width D (divisible by ``num_heads``).
        num_heads: attention heads.
        ffn_dim: hidden width of the feed-forward layer.
        dropout: on attention weights and on both residual branches (training only).
    """

    def __init__(self, *, dim: int, num_heads: int, ffn_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.dropout = num_heads, dropout
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, ffn_dim)
        self.ff2 = nn.Linear(ffn_dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x [B, N, D]``, ``mask [N, N]`` bool (True: may attend)."""
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.num_heads, d // self.num_heads).unbind(2)
        attended = nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0)  # [B, H, N, D / H]
        x = x + self.drop(self.out(attended.transpose(1, 2).reshape(b, n, d)))
        return x + self.drop(self.ff2(nn.functional.gelu(self.ff1(self.norm2(x)))))


class MultiTabTransformer(nn.Module):
    """``[B, F, D]`` feature tokens ``-> [T, B, output_dim]`` final task-token states.

    Args:
        dim: token width D.
        num_features: F, the number of feature tokens (fixes the mask, built once).
        num_tasks: T.
        num_layers: transformer blocks.
        num_heads: attention heads per block.
        ffn_dim: feed-forward hidden width (default ``4 * dim``).
        dropout: see ``MaskedTransformerBlock``.
        features_see_tasks: feature tokens also attend to the task tokens (tasks then share
            information through the features).
        output_dim: project the normalised task states ``D -> output_dim`` with one shared
            linear map (None: no projection, ``output_dim = D``).

    Example:
        >>> net = MultiTabTransformer(dim=8, num_features=5, num_tasks=3, num_layers=2, num_heads=2)
        >>> net(torch.zeros(4, 5, 8)).shape
        torch.Size([3, 4, 8])
    """

    mask: torch.Tensor

    def __init__(self, *, dim: int, num_features: int, num_tasks: int, num_layers: int,
                 num_heads: int, ffn_dim: int | None = None, dropout: float = 0.0,
                 features_see_tasks: bool = False, output_dim: int | None = None) -> None:
        super().__init__()
        self.num_tasks, self.num_features = num_tasks, num_features
        self.task_tokens = nn.Parameter(torch.randn(num_tasks, dim) * 0.02)
        self.blocks = nn.ModuleList(
            MaskedTransformerBlock(dim=dim, num_heads=num_heads, ffn_dim=ffn_dim or 4 * dim,
                                   dropout=dropout)
            for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, output_dim) if output_dim is not None else None
        self.output_dim = dim if output_dim is None else output_dim
        self.register_buffer("mask", multitask_attention_mask(num_tasks, num_features,
                                                              features_see_tasks),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1] != self.num_features:
            raise ValueError(f"expected [B, {self.num_features}, D] feature tokens, got {tuple(x.shape)}")
        tasks = self.task_tokens.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
        h = torch.cat([tasks, x], dim=1)
        for block in self.blocks:
            h = block(h, self.mask)
        out = self.norm(h[:, : self.num_tasks])
        if self.proj is not None:
            out = self.proj(out)
        return out.transpose(0, 1)


class MultiTab(nn.Module):
    """``[B, in] -> [T, B, output_dim]``: the backbone: a tokenizer's feature tokens read by a
    ``MultiTabTransformer``.

    Args:
        tokenizer: ``[B, in] -> [B, F, D]`` (one token per feature).
        encoder: the transformer over those F tokens of width D.

    Example:
        >>> tok = FeatureTokenizer(block_widths=[4, 4], num_scalars=2, dim=8)
        >>> enc = MultiTabTransformer(dim=8, num_features=4, num_tasks=3, num_layers=1, num_heads=2)
        >>> MultiTab(tokenizer=tok, encoder=enc)(torch.zeros(5, 10)).shape
        torch.Size([3, 5, 8])
    """

    def __init__(self, *, tokenizer: FeatureTokenizer, encoder: MultiTabTransformer) -> None:
        super().__init__()
        if tokenizer.num_tokens != encoder.num_features:
            raise ValueError(f"the tokenizer makes {tokenizer.num_tokens} tokens, the encoder "
                             f"reads {encoder.num_features}")
        if tokenizer.output_dim != encoder.task_tokens.shape[1]:
            raise ValueError(f"tokens are {tokenizer.output_dim} wide, the encoder's "
                             f"{encoder.task_tokens.shape[1]}")
        self.tokenizer = tokenizer
        self.encoder = encoder
        self.output_dim = encoder.output_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.tokenizer(x))
