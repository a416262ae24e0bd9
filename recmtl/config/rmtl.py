"""Knobs of RMTL loss weighting (``loss.weighting: rmtl``, ``loss.rmtl``): critics that value
each session's interactions and scale each row's loss by that value (``recmtl/train/rmtl.py``)."""

from __future__ import annotations

from dataclasses import dataclass


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
