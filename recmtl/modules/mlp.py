"""Multi-layer perceptrons: one for a single input, E experts batched into bmm's, feature gates."""

from __future__ import annotations

import math
from typing import Any

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
    """E independent MLPs evaluated as one batched matmul per layer (no Python loop).

    ``[B, in_features]`` (one input shared by all experts) or ``[E, B, in_features]`` (one input
    per expert, e.g. after a feature gate) ``-> [E, B, layer_sizes[-1]]``. Expert e's layer l
    computes ``act(norm(h @ weights[l][e] + biases[l][e]))``, initialised like ``nn.Linear``:
    ReLU without norm by default, or HoME's ``Swish(BatchNorm(.))`` with ``normalize=True``,
    which keeps every expert's output on one scale (no expert dominates the gate by magnitude,
    none dies with >90% zero activations).
    """

    def __init__(self, in_features: int, layer_sizes: list[int] | tuple[int, ...],
                 num_experts: int, normalize: bool = False) -> None:
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
        # One BatchNorm1d over E * D channels per layer: per expert, per unit statistics.
        self.norms = (nn.ModuleList(nn.BatchNorm1d(num_experts * size) for size in layer_sizes)
                      if normalize else None)
        self.output_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w0, b0 = self.weights[0], self.biases[0]
        if x.dim() == 2:
            # A shared input: one matmul against [in, E * out] instead of E small ones.
            e, d_in, d_out = w0.shape
            h = (x @ w0.permute(1, 0, 2).reshape(d_in, e * d_out)).view(-1, e, d_out)
            h = h.transpose(0, 1) + b0.to(h.dtype)  # in h's dtype: bfloat16 under autocast
        else:
            h = _batched_linear(x, w0, b0)
        h = self._activate(0, h)
        for layer, (w, b) in enumerate(zip(list(self.weights)[1:], list(self.biases)[1:],
                                           strict=True), start=1):
            h = self._activate(layer, _batched_linear(h, w, b))
        return h

    def _activate(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        if self.norms is None:
            # In place: baddbmm's backward does not need its output, so this saves a full
            # [E, B, D] allocation and memory pass per layer.
            return torch.relu_(h)
        e, b, d = h.shape
        normed = self.norms[layer](h.transpose(0, 1).reshape(b, e * d))
        return nn.functional.silu(normed.view(b, e, d).transpose(0, 1))


def _batched_linear(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``h [E, B, in] @ w [E, in, out] + b [E, 1, out]``."""
    if h.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        return _BFloat16BatchedLinear.apply(h, w, b)
    return torch.baddbmm(b, h, w)


class _BFloat16BatchedLinear(torch.autograd.Function):
    """``baddbmm`` under CPU autocast (``train.bf16``), with a backward that avoids a slow copy.

    The weight gradient contracts over the batch, ``h[e]^T @ g[e]``. ATen's bfloat16 CPU
    ``bmm`` first copies the transposed ``h`` to contiguous memory element by element (9.7 ms
    of a 36 ms dense step at batch 4096); a 2-D ``mm`` per expert reads it in place, and the
    whole dense step drops to ~29 ms (float32: ~55 ms). Float32 keeps ``baddbmm``, whose ``bmm``
    takes the transpose as it is. Gradients come back in the parameters' dtype (the autograd
    engine casts them).
    """

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        out = torch.baddbmm(b, h, w)  # autocast runs it in bfloat16
        ctx.save_for_backward(h, w)
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h, w = ctx.saved_tensors
        h, w = h.to(g.dtype), w.to(g.dtype)
        grad_w = torch.stack([h[e].t() @ g[e] for e in range(g.shape[0])])
        return torch.bmm(g, w.transpose(1, 2)), grad_w, g.sum(1, keepdim=True)


class FeatureGate(nn.Module):
    """HoME's feature gate: a private view of the input per expert, ``[B, in] -> [E, B, in]``.

    Expert e reads ``x * 2 sigmoid(x @ B_e @ A_e)`` with a rank-r ``B_e A_e``. ``A`` starts at
    zero, so every gate starts at exactly 1 (the experts first see the plain input) while ``B``
    is random, so ``A`` still receives gradient.
    """

    def __init__(self, in_features: int, num_experts: int, rank: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)
        self.down = nn.Parameter(torch.empty(num_experts, in_features, rank).uniform_(-bound, bound))
        self.up = nn.Parameter(torch.zeros(num_experts, rank, in_features))
        self.num_experts = num_experts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e, d_in, r = self.down.shape
        low = (x @ self.down.permute(1, 0, 2).reshape(d_in, e * r)).view(-1, e, r).transpose(0, 1)
        return x.unsqueeze(0) * (2.0 * torch.sigmoid(torch.bmm(low, self.up)))


class GatedExperts(nn.Module):
    """Experts behind an optional feature gate: ``[B, in] -> [E, B, D]``."""

    def __init__(self, experts: BatchedExperts, feature_gate: FeatureGate | None = None) -> None:
        super().__init__()
        self.experts = experts
        self.feature_gate = feature_gate
        self.num_experts = experts.num_experts
        self.output_dim = experts.output_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.experts(x if self.feature_gate is None else self.feature_gate(x))
