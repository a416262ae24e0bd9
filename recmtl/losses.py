"""Per-task probabilities and losses, sample-space masks and entire-space composition.

Composition (ESMM): a task with ``product_of`` has probability ``prod_k p_k``; its loss is BCE
against its own label over its own sample space (all impressions for ctcvr). Everything is
computed in log space: ``log p = sum_k logsigmoid(z_k)`` and ``log(1 - p) = log1mexp(log p)``,
so a tiny product never turns into ``log(0)``.
"""

from __future__ import annotations

import math

import torch

from recmtl.config import TaskConfig


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for ``x <= 0``, accurate on both ends (Maechler, 2012)."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def task_log_probs(logits: dict[str, torch.Tensor], tasks: tuple[TaskConfig, ...] | list[TaskConfig]
                   ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{task: (log p, log(1 - p))}`` for every task, base and composed."""
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for t in tasks:
        if t.product_of:
            log_p = torch.stack([out[k][0] for k in t.product_of]).sum(0)
            out[t.name] = (log_p, log1mexp(log_p))
        else:
            z = logits[t.name]
            out[t.name] = (torch.nn.functional.logsigmoid(z), torch.nn.functional.logsigmoid(-z))
    return out


def task_probabilities(logits: dict[str, torch.Tensor],
                       tasks: tuple[TaskConfig, ...] | list[TaskConfig]) -> dict[str, torch.Tensor]:
    """``{task: p [B]}``; composed tasks are exact products of their parts."""
    probs: dict[str, torch.Tensor] = {}
    for t in tasks:
        if t.product_of:
            p = probs[t.product_of[0]]
            for k in t.product_of[1:]:
                p = p * probs[k]
            probs[t.name] = p
        else:
            probs[t.name] = torch.sigmoid(logits[t.name])
    return probs


def sample_space(task: TaskConfig, labels: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """Boolean mask of rows in the task's sample space, or None for all rows."""
    return None if task.space is None else labels[task.space] > 0.5


def multitask_loss(logits: dict[str, torch.Tensor], labels: dict[str, torch.Tensor],
                   tasks: tuple[TaskConfig, ...] | list[TaskConfig]
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum of per-task mean BCE, each over its sample space.

    Returns the total and ``{task: loss}`` (detached, for logging). Tasks with weight 0 are
    still reported; an empty sample space contributes 0.
    """
    log_probs = task_log_probs(logits, tasks)
    total = torch.zeros((), device=next(iter(logits.values())).device)
    per_task: dict[str, torch.Tensor] = {}
    for t in tasks:
        log_p, log_q = log_probs[t.name]
        y = labels[t.label]
        nll = -(y * log_p + (1.0 - y) * log_q)
        mask = sample_space(t, labels)
        if mask is None:
            loss = nll.mean()
        else:
            loss = (nll * mask).sum() / mask.sum().clamp(min=1)
        per_task[t.name] = loss.detach()
        if t.loss_weight:
            total = total + t.loss_weight * loss
    return total, per_task
