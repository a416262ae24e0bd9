"""Per-task probabilities and losses, sample-space masks, entire-space composition, weighting.

Composition (ESMM): a task with ``product_of`` has probability ``prod_k p_k``; its loss is BCE
against its own label over its own sample space (all impressions for ctcvr). Everything is
computed in log space: ``log p = sum_k logsigmoid(z_k)`` and ``log(1 - p) = log1mexp(log p)``,
so a tiny product never turns into ``log(0)``.

Regression tasks (``kind: regression``) output a value and take squared error. ESCM2's
counterfactual CVR losses, AITM's calibrator and uncertainty weighting are below; the
gradient method (PCGrad) lives with the training loop.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F  # noqa: N812

from recmtl.config import LossConfig, TaskConfig

Tasks = tuple[TaskConfig, ...] | list[TaskConfig]
CALIBRATOR = "calibrator"  # the key of AITM's penalty among the task losses


def imputation_output(task: str) -> str:
    """The model output holding ESCM2-DR's imputed conversion logit for ``task``."""
    return f"{task}__imputed"


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for ``x <= 0``, accurate on both ends (Maechler, 2012)."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def task_log_probs(logits: dict[str, torch.Tensor], tasks: Tasks
                   ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{task: (log p, log(1 - p))}`` for every binary task, base and composed."""
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for t in tasks:
        if t.kind != "binary":
            continue
        if t.product_of:
            log_p = torch.stack([out[k][0] for k in t.product_of]).sum(0)
            out[t.name] = (log_p, log1mexp(log_p))
        else:
            z = logits[t.name]
            out[t.name] = (F.logsigmoid(z), F.logsigmoid(-z))
    return out


def task_probabilities(logits: dict[str, torch.Tensor], tasks: Tasks) -> dict[str, torch.Tensor]:
    """``{task: p [B]}`` (a regression task: its value); composed tasks are exact products."""
    probs: dict[str, torch.Tensor] = {}
    for t in tasks:
        if t.kind == "regression":
            probs[t.name] = logits[t.name]
        elif t.product_of:
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


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return values.mean()
    return (values * mask).sum() / mask.sum().clamp(min=1)


def propensity_task(task: TaskConfig, tasks: Tasks) -> TaskConfig:
    """The base binary task over all rows whose label is ``task.space`` (pCTR for CVR)."""
    return next(p for p in tasks if p.label == task.space and p.space is None
                and not p.product_of and p.kind == "binary")


def escm2_loss(task: TaskConfig, nll: torch.Tensor, outputs: dict[str, torch.Tensor],
               labels: dict[str, torch.Tensor], propensity: torch.Tensor) -> torch.Tensor:
    """ESCM2's entire-space CVR loss (Wang et al., SIGIR 2022), averaged over all rows.

    ``ips``: ``o * e / p``, with ``e`` the row's BCE, ``o`` the click and ``p`` the detached,
    clipped pCTR. ``dr`` (doubly robust, in the joint-learning form of Wang et al. 2019): an
    imputation head predicts the conversion ``r~``; ``e^ = BCE(r~, pCVR)`` is the imputed error,
    so unclicked rows also shape pCVR; the loss is ``e^ + o (e - e^) / p`` plus the imputation
    head's own ``o (e - e^)^2 / p`` (with the pCVR side of ``e^`` detached there).
    """
    o = labels[task.space].to(nll.dtype)  # type: ignore[index]
    if task.escm2 == "ips":
        return (o * nll / propensity).mean()
    z_cvr = outputs[task.name]
    imputed = torch.sigmoid(outputs[imputation_output(task.name)])
    e_hat = F.binary_cross_entropy_with_logits(z_cvr, imputed.detach(), reduction="none")
    dr = (e_hat + o * (nll - e_hat) / propensity).mean()
    e_hat_imp = F.binary_cross_entropy_with_logits(z_cvr.detach(), imputed, reduction="none")
    imputation = (o * (nll.detach() - e_hat_imp) ** 2 / propensity).mean()
    return dr + imputation


def calibrator_penalty(log_probs: dict[str, tuple[torch.Tensor, torch.Tensor]],
                       tasks: Tasks) -> torch.Tensor:
    """AITM's calibrator: ``mean(sum_t max(p_t - p_{t-1}, 0))`` along the base binary tasks
    over all rows, in config order (each step of the funnel is no likelier than the one before)."""
    chain = [t.name for t in tasks if t.kind == "binary" and not t.product_of and t.space is None]
    p = [log_probs[name][0].exp() for name in chain]
    steps = (torch.relu(b - a) for a, b in zip(p[:-1], p[1:], strict=True))
    return sum(steps, torch.zeros_like(p[0])).mean()


def task_losses(outputs: dict[str, torch.Tensor], labels: dict[str, torch.Tensor], tasks: Tasks,
                loss: LossConfig | None = None,
                row_weights: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Unweighted, differentiable loss per task over its sample space (an empty space gives 0),
    plus ``CALIBRATOR`` when ``loss.calibrator_weight`` is set. ``row_weights``: ``{task: [B]}``
    per-row factors of a binary task's log loss (RMTL's critic weights, ``recmtl.train.rmtl``)."""
    loss = loss or LossConfig()
    log_probs = task_log_probs(outputs, tasks)
    out: dict[str, torch.Tensor] = {}
    for t in tasks:
        y = labels[t.label]
        mask = sample_space(t, labels)
        if t.kind == "regression":
            out[t.name] = _masked_mean((outputs[t.name] - y) ** 2, mask)
            continue
        log_p, log_q = log_probs[t.name]
        nll = -(y * log_p + (1.0 - y) * log_q)
        if row_weights is not None and t.name in row_weights:
            nll = row_weights[t.name] * nll
        if t.escm2 == "none":
            out[t.name] = _masked_mean(nll, mask)
        else:
            prop = log_probs[propensity_task(t, tasks).name][0].detach().exp()
            out[t.name] = escm2_loss(t, nll, outputs, labels, prop.clamp(min=loss.propensity_clip))
    if loss.calibrator_weight:
        out[CALIBRATOR] = calibrator_penalty(log_probs, tasks)
    return out


def weighted_terms(losses: dict[str, torch.Tensor], tasks: Tasks, loss: LossConfig | None = None,
                   log_vars: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The terms that sum to the training loss, one per task with a non-zero weight.

    Fixed: ``w_t L_t``. Uncertainty (``log_vars`` s, one per task in config order, Kendall et
    al. 2018): ``exp(-s_t) w_t L_t + s_t / 2`` for binary and ``exp(-s_t) w_t L_t / 2 + s_t / 2``
    for regression tasks (their Gaussian and Boltzmann likelihoods with ``s = log sigma^2``).
    """
    loss = loss or LossConfig()
    terms: dict[str, torch.Tensor] = {}
    for i, t in enumerate(tasks):
        if not t.loss_weight:
            continue
        term = t.loss_weight * losses[t.name]
        if log_vars is not None:
            scale = 0.5 if t.kind == "regression" else 1.0
            term = scale * torch.exp(-log_vars[i]) * term + 0.5 * log_vars[i]
        terms[t.name] = term
    if CALIBRATOR in losses:
        terms[CALIBRATOR] = loss.calibrator_weight * losses[CALIBRATOR]
    return terms


def multitask_loss(outputs: dict[str, torch.Tensor], labels: dict[str, torch.Tensor],
                   tasks: Tasks, loss: LossConfig | None = None,
                   log_vars: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The training loss and ``{task: unweighted loss}`` (detached, for logging)."""
    losses = task_losses(outputs, labels, tasks, loss)
    terms = weighted_terms(losses, tasks, loss, log_vars)
    total = sum(terms.values(), torch.zeros((), device=next(iter(outputs.values())).device))
    return total, {k: v.detach() for k, v in losses.items()}
