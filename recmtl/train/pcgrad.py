"""PCGrad (Yu et al., NeurIPS 2020) on the shared dense parameters.

Each task's gradient of the shared parameters is projected off every other task's gradient it
conflicts with (negative dot product), in a random order; the sum of the projected gradients
replaces the plain sum. Towers, heads and embeddings keep their ordinary gradients.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist


def project_conflicting(task_grads: Sequence[torch.Tensor],
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """``T x [N]`` flat per-task gradients -> ``[N]``, the sum of the projected gradients."""
    projected = [g.clone() for g in task_grads]
    for i, g in enumerate(projected):
        for j in torch.randperm(len(task_grads), generator=generator).tolist():
            if j == i:
                continue
            other = task_grads[j]
            dot = torch.dot(g, other)
            if dot < 0:
                g.sub_(dot / other.dot(other).clamp(min=1e-20) * other)
    return torch.stack(projected).sum(0)


class PCGrad:
    """Computes the projected gradient of ``params`` from per-task loss terms, before the
    ordinary backward, and writes it into ``.grad`` after it (averaged over ranks)."""

    def __init__(self, params: Sequence[torch.nn.Parameter], seed: int = 0) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.generator = torch.Generator().manual_seed(seed)
        self._merged: torch.Tensor | None = None

    def prepare(self, terms: Sequence[torch.Tensor]) -> None:
        """Per-task gradients by ``autograd.grad`` (no ``.grad`` is touched, no hooks run)."""
        flat = []
        for term in terms:
            grads = torch.autograd.grad(term, self.params, retain_graph=True, allow_unused=True)
            flat.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                   for g, p in zip(grads, self.params, strict=True)]))
        self._merged = project_conflicting(flat, self.generator)

    def apply(self) -> None:
        """Overwrites the shared parameters' gradients with the projected one."""
        assert self._merged is not None, "prepare() first"
        merged = self._merged
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(merged)
            merged /= dist.get_world_size()
        offset = 0
        for p in self.params:
            n = p.numel()
            p.grad = merged[offset:offset + n].view_as(p).clone()
            offset += n
        self._merged = None
