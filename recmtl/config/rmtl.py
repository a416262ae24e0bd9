"""Knobs of RMTL loss weighting (``loss.weighting: rmtl``, ``loss.rmtl``): critics that value
each session's interactions and scale each row's loss by that value (``recmtl/train/rmtl.py``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from recmtl.config.schema import TaskConfig


@dataclass(frozen=True)
class RmtlConfig:
    """``loss.rmtl``: RMTL (Liu et al., WWW 2023) as read in ``recmtl/train/rmtl.py``.

    ``weight_lambda`` (the paper's lambda): a row's loss weight for task t is
    ``1 - weight_lambda * Q_t(s, a)``, with Q_t <= 0 the critic's value of the row's state and
    the model's prediction. ``gamma``: the discount of the session's later rewards.
    ``target_tau``: the step of the target critics' moving average each training step.
    ``critic_lr``: the critics' Adam learning rate. ``critic_layers``: hidden widths of each
    task's critic over ``[state, action]``.
    """

    weight_lambda: float = 0.5
    gamma: float = 0.9
    target_tau: float = 0.1
    critic_lr: float = 1e-3
    critic_layers: tuple[int, ...] = (64,)


def rmtl_tasks(tasks: Sequence[TaskConfig]) -> list[str]:
    """The tasks ``loss.weighting: rmtl`` weights: binary, over all rows, without escm2, with a
    non-zero ``loss_weight`` (CTR and CTCVR in the paper), in config order."""
    return [t.name for t in tasks if t.kind == "binary" and t.space is None
            and t.escm2 == "none" and t.loss_weight]


def check_rmtl(rm: RmtlConfig, weighted_tasks: list[str], group: str | None, pipeline: str,
               fail: Callable[[str], None]) -> None:
    """Cross-field rules of ``loss.weighting: rmtl``; ``weighted_tasks``: the tasks it weights
    (binary, over all rows, no escm2, non-zero ``loss_weight``)."""
    if group is None:
        fail("loss.weighting: rmtl needs features.group (the column whose rows form a session)")
    if not weighted_tasks:
        fail("loss.weighting: rmtl weights binary tasks over all rows (no space, no escm2) with "
             "a non-zero loss_weight; there are none")
    if pipeline != "none":
        fail("loss.weighting: rmtl needs the plain step (train.pipeline: none)")
    if rm.weight_lambda < 0 or not 0 <= rm.gamma < 1 or not 0 < rm.target_tau <= 1:
        fail("loss.rmtl: weight_lambda >= 0, 0 <= gamma < 1 and 0 < target_tau <= 1")
    if rm.critic_lr <= 0 or any(w < 1 for w in rm.critic_layers):
        fail("loss.rmtl: critic_lr must be > 0 and critic_layers widths >= 1")
