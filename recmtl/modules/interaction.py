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

    Example:
        >>> DotInteraction(num_features=3, dim=2)(torch.ones(4, 6)).shape
        torch.Size([4, 9])
    """

    def __init__(self, num_features: int, dim: int) -> None:
        super().__init__()
        self.num_features = num_features
        self.dim = dim
        rows, cols = torch.triu_indices(num_features, num_features, offset=1)
        self.rows: torch.Tensor
        self.cols: torch.Tensor
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        self.output_dim = num_features * dim + len(rows)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        emb = pooled.view(-1, self.num_features, self.dim)
        gram = torch.bmm(emb, emb.transpose(1, 2))  # [B, F, F]
        return torch.cat([pooled, gram[:, self.rows, self.cols]], dim=1)
