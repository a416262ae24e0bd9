"""Multi-layer perceptrons: one for a single input, one for E experts batched into bmm's."""

from __future__ import annotations

import math

import torch
from torch import nn


class MLP(nn.Module):
    """Linear -> ReLU stack. ``[B, in_features] -> [B, layer_sizes[-1]]``.

    Example:
        >>> MLP(in_features=8, layer_sizes=[16, 4])(torch.zeros(2, 8)).shape
        torch.Size([2, 4])
    """

    def __init__(self, in_features: int, layer_sizes: list[int] | tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for size in layer_sizes:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.layers = nn.Sequential(*layers)
        self.output_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class BatchedExperts(nn.Module):
    """E independent ReLU MLPs evaluated as one batched matmul per layer (no Python loop).

    ``[B, in_features] -> [E, B, layer_sizes[-1]]``. Expert e's layer l computes
    ``relu(h @ weights[l][e] + biases[l][e])``, initialised like ``nn.Linear``.
    """

    def __init__(self, in_features: int, layer_sizes: list[int] | tuple[int, ...],
                 num_experts: int) -> None:
        super().__init__()
        if not layer_sizes:
            raise ValueError("BatchedExperts needs at least one layer")
        self.num_experts = num_experts
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        width = in_features
        for size in layer_sizes:
            bound = 1.0 / math.sqrt(width)
            self.weights.append(nn.Parameter(torch.empty(num_experts, width, size).uniform_(
                -bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(num_experts, 1, size).uniform_(
                -bound, bound)))
            width = size
        self.output_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The first layer shares its input across experts: one matmul against [in, E * out].
        w0 = self.weights[0]
        e, d_in, d_out = w0.shape
        h = (x @ w0.permute(1, 0, 2).reshape(d_in, e * d_out)).view(-1, e, d_out)
        h = torch.relu_(h.transpose(0, 1) + self.biases[0])
        for w, b in zip(list(self.weights)[1:], list(self.biases)[1:], strict=True):
            # In place: baddbmm's backward does not need its output, so this saves a full
            # [E, B, D] allocation and memory pass per layer.
            h = torch.relu_(torch.baddbmm(b, h, w))
        return h
