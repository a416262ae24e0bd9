"""Session critics of RMTL weighting: one value network per task over (state, action)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from recmtl.modules.mlp import MLP


class SessionCritics(nn.Module):
    """T critics, ``Q_t(s, a_t) = -softplus(head_t(MLP_t([s, a_t])))`` (<= 0: the rewards are
    negative log losses, so every value is).

    ``[B, state_dim]`` states and ``[B, T]`` actions (the predicted probabilities) ->
    ``[B, T]`` values.

    Example:
        >>> SessionCritics(state_dim=6, num_tasks=2, layer_sizes=[8])(
        ...     torch.zeros(3, 6), torch.full((3, 2), 0.5)).shape
        torch.Size([3, 2])
    """

    def __init__(self, state_dim: int, num_tasks: int, layer_sizes: list[int] | tuple[int, ...]
                 ) -> None:
        super().__init__()
        bodies = [MLP(state_dim + 1, layer_sizes) for _ in range(num_tasks)]
        self.bodies = nn.ModuleList(bodies)
        self.heads = nn.ModuleList(nn.Linear(b.output_dim, 1) for b in bodies)
        self.state_dim = state_dim
        self.output_dim = num_tasks

    def forward(self, state: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        values = [head(body(torch.cat([state, actions[:, t:t + 1]], dim=1)))
                  for t, (body, head) in enumerate(zip(self.bodies, self.heads, strict=True))]
        return -F.softplus(torch.cat(values, dim=1))
