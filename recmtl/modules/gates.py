"""Gates: input-dependent weights over experts, ``[B, in] -> [G, B, E]`` for G gates at once.

``SoftmaxGate`` is MMoE's gate. ``DSelectKGate`` (Hazimeh et al., NeurIPS 2021) is a
differentiable sparse gate: each of its k selectors picks one expert through a binary code of
smooth-step "bits" that reach exactly 0 or 1, and a softmax mixes the k selections, so a
trained gate puts exactly zero weight on all but at most k experts.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class SoftmaxGate(nn.Module):
    """G softmax gates over E experts from one linear map.

    Example:
        >>> SoftmaxGate(in_features=8, num_gates=3, num_experts=4)(torch.zeros(2, 8)).shape
        torch.Size([3, 2, 4])
    """

    def __init__(self, in_features: int, num_gates: int, num_experts: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_features, num_gates * num_experts)
        self.num_gates, self.num_experts = num_gates, num_experts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.proj(x).view(x.shape[0], self.num_gates, self.num_experts)
        return torch.softmax(logits, dim=-1).transpose(0, 1)


def smooth_step(t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Cubic step from 0 (``t <= -gamma/2``) to 1 (``t >= gamma/2``), C1-smooth in between."""
    inner = -2.0 / gamma**3 * t**3 + 1.5 / gamma * t + 0.5
    return torch.where(t <= -gamma / 2, torch.zeros_like(t),
                       torch.where(t >= gamma / 2, torch.ones_like(t), inner))


class DSelectKGate(nn.Module):
    """G per-example DSelect-k gates over E experts.

    Selector i of a gate reads ``m = ceil(log2 E)`` smooth-step bits ``s_ij`` from a linear map
    of x; the probability it gives binary code c is ``prod_j (s_ij if bit j of c else 1 - s_ij)``,
    which sums to 1 over the ``2**m`` codes. Code c selects expert ``c mod E`` (when E is not a
    power of two some experts own two codes; the paper leaves this case open, and this keeps
    the weights summing to 1 without renormalising). The gate is
    ``sum_i softmax(alpha(x))_i * selection_i``.

    Args:
        in_features: input width.
        num_gates: G.
        num_experts: E.
        k: selectors per gate (at most k experts get weight once the bits saturate).
        gamma: width of the smooth step's ramp.
    """

    code_bits: torch.Tensor  # [C, m]: bit j of code c
    code_to_expert: torch.Tensor  # [C, E]: one-hot expert of code c

    def __init__(self, in_features: int, num_gates: int, num_experts: int, k: int,
                 gamma: float = 1.0) -> None:
        super().__init__()
        self.num_gates, self.num_experts, self.k, self.gamma = num_gates, num_experts, k, gamma
        self.bits = max(1, math.ceil(math.log2(num_experts)))
        self.codes_proj = nn.Linear(in_features, num_gates * k * self.bits)
        self.mix_proj = nn.Linear(in_features, num_gates * k)
        codes = torch.arange(2**self.bits)
        self.register_buffer("code_bits", ((codes[:, None] >> torch.arange(self.bits)) & 1).float(),
                             persistent=False)
        self.register_buffer("code_to_expert",
                             nn.functional.one_hot(codes % num_experts, num_experts).float(),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        s = smooth_step(self.codes_proj(x).view(b, self.num_gates, self.k, 1, self.bits), self.gamma)
        bits = self.code_bits  # broadcast over [B, G, k, C, m]
        per_code = (bits * s + (1 - bits) * (1 - s)).prod(-1)  # [B, G, k, C]
        selection = per_code @ self.code_to_expert  # [B, G, k, E]
        mix = torch.softmax(self.mix_proj(x).view(b, self.num_gates, self.k, 1), dim=2)
        return (mix * selection).sum(2).transpose(0, 1)


def mix_experts(weights: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """``weights [G, B, E], experts [E, B, D] -> [G, B, D]``: each gate's weighted sum."""
    return torch.einsum("gbe,ebd->gbd", weights, experts)
