"""Pairwise dot-product feature interaction (as in DLRM's interaction arch).

An MLP on concatenated embeddings learns a bilinear user x item term poorly; explicit dot
products between every pair of pooled feature embeddings hand it over directly.
"""

from __future__ import annotations

import torch
from torch import nn


class DotInteraction(nn.Module):
    """``pooled [B, F * D] -> [B, F * D + F * (F - 1) / 2]``: the input followed by the dot
    products of every unordered pair of the F feature embeddings (all of width D).

    With ``block_widths`` and ``features`` the input is blocks of those widths and only the
    listed blocks (each D wide) are paired; the others (INFNet's history slots) pass through.

    Example:
        >>> DotInteraction(num_features=3, dim=2)(torch.ones(4, 6)).shape
        torch.Size([4, 9])
        >>> DotInteraction(num_features=2, dim=2, block_widths=[2, 5, 2],
        ...                features=[0, 2])(torch.ones(4, 9)).tolist()[0][-1]
        2.0
    """

    def __init__(self, num_features: int, dim: int, block_widths: list[int] | None = None,
                 features: list[int] | None = None) -> None:
        super().__init__()
        widths = block_widths or [dim] * num_features
        features = list(range(len(widths))) if features is None else features
        if len(features) != num_features or any(widths[i] != dim for i in features):
            raise ValueError(f"pairing blocks {features} of widths {widths}: expected "
                             f"{num_features} blocks of width {dim}")
        starts = [sum(widths[:i]) for i in features]
        self.columns: torch.Tensor | None
        self.register_buffer("columns", torch.tensor([s + j for s in starts for j in range(dim)])
                             if block_widths is not None else None, persistent=False)
        self.num_features = num_features
        self.dim = dim
        rows, cols = torch.triu_indices(num_features, num_features, offset=1)
        self.rows: torch.Tensor
        self.cols: torch.Tensor
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        self.output_dim = sum(widths) + len(rows)

    def products(self, pooled: torch.Tensor) -> torch.Tensor:
        """``[B, in] -> [B, F * (F - 1) / 2]``: the pair products alone."""
        paired = pooled if self.columns is None else pooled.index_select(1, self.columns)
        emb = paired.reshape(-1, self.num_features, self.dim)
        gram = torch.bmm(emb, emb.transpose(1, 2))  # [B, F, F]
        return gram[:, self.rows, self.cols]

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return torch.cat([pooled, self.products(pooled)], dim=1)
