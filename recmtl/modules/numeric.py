"""Numeric features as embeddings: ``dense [B, F] -> [B, F * dim]``, one ``dim`` block a feature.

Two encodings from Gorishniy et al., "On Embeddings for Numerical Features in Tabular Deep
Learning" (2022), each followed by a per-feature linear layer (weights ``[F, in, dim]``,
applied as one batched einsum, no loop over features):

- ``PiecewiseLinearEncoding`` (PLE): bins ``[b_{t-1}, b_t)`` from per-feature edges (train
  quantiles: ``quantile_edges``). Component t is 0 below its bin, 1 above it, and
  ``(x - b_{t-1}) / (b_t - b_{t-1})`` inside. As in the paper, the first bin is not clipped
  below and the last not clipped above, so values outside the edges extrapolate linearly
  instead of saturating. Features may have different bin counts: shorter ones are padded
  with bins whose component is clamped to exactly 0. No ``searchsorted``: clamps only, which
  ``torch.export`` and ONNX take as plain ``Min`` / ``Max``.
- ``PeriodicEncoding`` (the paper's PLR): ``[sin(2 pi c x), cos(2 pi c x)]`` with trainable
  frequencies ``c ~ N(0, sigma)``, ``[F, K]``, then linear and ReLU.

Edges and clamp bounds are float32 buffers: saved with the model, constants in an export.

Example:
    >>> ple = PiecewiseLinearEncoding([[0.0, 1.0, 3.0]], dim=4)
    >>> ple.components(torch.tensor([[-1.0], [2.0], [5.0]])).tolist()
    [[[-1.0, 0.0]], [[1.0, 0.5]], [[1.0, 2.0]]]
    >>> ple(torch.zeros(3, 1)).shape, ple.output_dim
    (torch.Size([3, 4]), 4)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


class FeatureLinear(nn.Module):
    """One linear map per feature: ``[B, F, K] -> [B, F, dim]``, initialised like ``nn.Linear``."""

    def __init__(self, num_features: int, in_features: int, dim: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(num_features, in_features, dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_features, dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bfk,fkd->bfd", x, self.weight) + self.bias


def quantile_edges(values: np.ndarray, num_bins: int) -> list[list[float]]:
    """Per-column bin edges at ``num_bins`` quantiles of ``values [N, F]`` (NaN ignored).

    Repeated quantiles (a column with few distinct values) collapse, so a column gets at most
    ``num_bins`` bins; a constant column gets one bin ``[v, v + 1)``.

    Example:
        >>> quantile_edges(np.array([[0.0], [1.0], [2.0], [3.0], [4.0]]), 2)
        [[0.0, 2.0, 4.0]]
    """
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    data = np.asarray(values, dtype=np.float64)
    if data.ndim != 2:
        raise ValueError(f"values must be [N, F], got shape {data.shape}")
    levels = np.linspace(0.0, 1.0, num_bins + 1)
    edges = []
    for column in data.T:
        column = column[np.isfinite(column)]
        if column.size == 0:
            edges.append([0.0, 1.0])
            continue
        # float32 first: edges equal in float32 would make a zero-width bin in the buffers.
        unique = np.unique(np.quantile(column, levels).astype(np.float32))
        edges.append(unique.tolist() if unique.size > 1 else [float(unique[0]), float(unique[0]) + 1.0])
    return edges


class PiecewiseLinearEncoding(nn.Module):
    """PLE of each feature, then a per-feature linear layer: ``[B, F] -> [B, F * dim]``.

    Args:
        boundaries: per feature, its bin edges ``b_0 < b_1 < ... < b_T`` (``T >= 1`` bins).
        dim: width of each feature's embedding.
        activation: apply ReLU after the linear layer.
        num_bins: pad every feature to this many bins (>= the most any feature has), so a
            model built before its edges are known takes a ``state_dict`` with them.
    """

    lower: torch.Tensor  # [F, T] left edge of each bin
    width: torch.Tensor  # [F, T]
    low: torch.Tensor  # [F, T] clamp bounds: -inf on first bins, 0 elsewhere
    high: torch.Tensor  # [F, T] 1, +inf on last bins, 0 on padded bins

    def __init__(self, boundaries: Sequence[Sequence[float]], dim: int,
                 activation: bool = False, num_bins: int | None = None) -> None:
        super().__init__()
        if not boundaries:
            raise ValueError("PiecewiseLinearEncoding needs at least one feature")
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        edges = [np.asarray(b, dtype=np.float32) for b in boundaries]
        for f, e in enumerate(edges):
            if e.ndim != 1 or e.size < 2:
                raise ValueError(f"feature {f}: needs at least 2 bin edges, got {e.tolist()}")
            if not np.all(np.isfinite(e)):
                raise ValueError(f"feature {f}: bin edges have NaN or infinite values")
            if not np.all(np.diff(e) > 0):
                raise ValueError(f"feature {f}: bin edges must be strictly increasing (in float32)")
        most = max(e.size - 1 for e in edges)
        if num_bins is not None and num_bins < most:
            raise ValueError(f"num_bins {num_bins} is below a feature's {most} bins")
        num_bins = most if num_bins is None else num_bins
        shape = (len(edges), num_bins)
        # Padded bins: lower 0, width 1, clamped to [0, 0], so their component is exactly 0.
        lower, width = np.zeros(shape, np.float32), np.ones(shape, np.float32)
        low, high = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
        for f, e in enumerate(edges):
            t = e.size - 1
            lower[f, :t], width[f, :t] = e[:-1], np.diff(e)
            high[f, :t] = 1.0
            low[f, 0] = -np.inf
            high[f, t - 1] = np.inf
        self.register_buffer("lower", torch.from_numpy(lower))
        self.register_buffer("width", torch.from_numpy(width))
        self.register_buffer("low", torch.from_numpy(low))
        self.register_buffer("high", torch.from_numpy(high))
        self.linear = FeatureLinear(len(edges), num_bins, dim)
        self.activation = activation
        self.num_features = len(edges)
        self.num_bins = num_bins
        self.output_dim = len(edges) * dim

    def components(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, F] -> [B, F, T]``: the PLE components, zero on padded bins."""
        r = (x.unsqueeze(-1) - self.lower) / self.width
        return torch.maximum(torch.minimum(r, self.high), self.low)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(self.components(x))
        if self.activation:
            out = torch.relu(out)
        return out.flatten(1)


class PeriodicEncoding(nn.Module):
    """PLR: ``[sin(2 pi c x), cos(2 pi c x)]``, per-feature linear, ReLU. ``[B, F] -> [B, F * dim]``.

    Args:
        num_features: F.
        num_frequencies: K trainable frequencies per feature.
        sigma: standard deviation of the frequencies' initialisation (the paper tunes it;
            too large a sigma makes the encoding noise-like).
        dim: width of each feature's embedding.
        activation: apply ReLU after the linear layer (the paper's PLR does).
    """

    def __init__(self, num_features: int, num_frequencies: int, sigma: float, dim: int,
                 activation: bool = True) -> None:
        super().__init__()
        for name, value in (("num_features", num_features), ("num_frequencies", num_frequencies),
                            ("dim", dim)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not (sigma > 0 and math.isfinite(sigma)):
            raise ValueError(f"sigma must be positive and finite, got {sigma}")
        self.frequencies = nn.Parameter(torch.randn(num_features, num_frequencies) * sigma)
        self.linear = FeatureLinear(num_features, 2 * num_frequencies, dim)
        self.activation = activation
        self.num_features = num_features
        self.output_dim = num_features * dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, F] -> [B, F, 2K]``: sines then cosines."""
        v = 2 * math.pi * self.frequencies * x.unsqueeze(-1)
        return torch.cat([torch.sin(v), torch.cos(v)], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(self.features(x))
        if self.activation:
            out = torch.relu(out)
        return out.flatten(1)
