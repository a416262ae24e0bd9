"""Feature tokens for a transformer backbone: the flat backbone input -> one D-wide token each.

The backbone input is ``[B, W]``: blocks of columns (each pooled sparse feature's embedding, the
interaction's pair products) followed by single columns (the dense floats). Block j becomes
``x_j A_j + c_j``, its own linear map to D; column j becomes ``x_j w_j + b_j``, its own affine
map of a scalar (the numerical tokens of FT-Transformer, Gorishniy et al. 2021).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class FeatureTokenizer(nn.Module):
    """``[B, sum(block_widths) + num_scalars] -> [B, len(block_widths) + num_scalars, dim]``.

    Args:
        block_widths: widths of the leading column blocks, one token per block.
        num_scalars: the trailing columns, one token per column.
        dim: token width D.

    Tokens come in input order: blocks first, then scalars. ``num_tokens`` is their count.

    Example:
        >>> tok = FeatureTokenizer(block_widths=[8, 8, 3], num_scalars=4, dim=16)
        >>> tok(torch.zeros(2, 23)).shape
        torch.Size([2, 7, 16])
    """

    def __init__(self, *, block_widths: list[int] | tuple[int, ...], num_scalars: int,
                 dim: int) -> None:
        super().__init__()
        if any(w < 1 for w in block_widths) or num_scalars < 0 or dim < 1:
            raise ValueError(f"block widths {list(block_widths)} and dim {dim} must be >= 1, "
                             f"num_scalars {num_scalars} >= 0")
        if not block_widths and not num_scalars:
            raise ValueError("FeatureTokenizer needs at least one block or scalar")
        self.block_widths = list(block_widths)
        self.blocks = nn.ModuleList(nn.Linear(w, dim) for w in self.block_widths)
        # nn.Linear's init for a one-input map: U(-1, 1) would dwarf the block tokens.
        bound = 1.0 / math.sqrt(dim)
        self.scalar_weight = nn.Parameter(torch.empty(num_scalars, dim).uniform_(-bound, bound))
        self.scalar_bias = nn.Parameter(torch.empty(num_scalars, dim).uniform_(-bound, bound))
        self.in_features = sum(self.block_widths) + num_scalars
        self.num_tokens = len(self.block_widths) + num_scalars
        self.output_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"expected [B, {self.in_features}], got {tuple(x.shape)}")
        width = sum(self.block_widths)
        parts = x[:, :width].split(self.block_widths, dim=1) if self.block_widths else ()
        tokens = [block(part).unsqueeze(1) for block, part in zip(self.blocks, parts, strict=True)]
        scalars = x[:, width:].unsqueeze(-1)  # [B, S, 1]
        tokens.append(scalars * self.scalar_weight.to(x.dtype) + self.scalar_bias.to(x.dtype))
        return torch.cat(tokens, dim=1)
