"""RMTL loss weighting (Liu et al., "Multi-Task Recommendations with Reinforcement Learning",
WWW 2023): per-task critics value each row of a session, and a row's loss is scaled by it.

The paper leaves room; this is the reading implemented (``loss.weighting: rmtl``):

- **Sessions.** The rows of a training batch that share ``features.group`` form a session, in
  batch order: row i's next state is the next row of its group in the batch; the last row of
  a group ends its session (done). Rows of one group spread over two batches make two
  sessions.
- **State, action, reward.** The state s is the backbone's input (the interaction of the
  pooled embeddings and the dense floats), detached, captured by a forward pre-hook on the
  backbone, so every architecture works unchanged. The action a_t is the model's predicted
  probability of task t, the reward ``r_t = -BCE(y_t, a_t)``, both detached.
- **Critics** (``SessionCritics``, Q_t <= 0), trained online at every step by one TD(0) step:
  ``(Q_t(s, a) - r_t - gamma (1 - done) Qbar_t(s', a'))^2`` averaged over rows and tasks,
  where Qbar are target critics (a moving average with step ``target_tau``) and a' is the
  model's own prediction at the next row (there is no target actor). The paper pre-trains the
  actor, fits the critics offline (TD3-BC) and then fine-tunes the actor with their weights;
  here the ranking model and the critics learn together in one run from the first step.
- **Weights.** ``w_t = 1 - weight_lambda * Q_t(s, a)`` per row, from the critics before this
  step's update and detached (the form of the authors' released ``RlLossPolisher``); the
  task's loss becomes ``mean(w_t * BCE_t)``, not renormalised. Rows that the critic expects
  to be poorly served by the rest of their session weigh more.
- **Scope.** Binary tasks over all rows without escm2 (``rmtl_tasks``: CTR and CTCVR in the
  paper); the others keep their ordinary loss. The critics have their own Adam and their
  gradients are averaged across ranks, so every rank holds the same critics; rank 0 saves
  them (critics, targets, Adam) with each checkpoint and a resumed run goes on with them.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.hooks import RemovableHandle

from recmtl.config import TaskConfig
from recmtl.config.rmtl import RmtlConfig
from recmtl.config.schema import rmtl_tasks
from recmtl.losses import task_log_probs
from recmtl.modules.critic import SessionCritics


def next_in_session(group: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B]`` group ids -> (``[B]`` index of each row's next row of the same group in batch
    order, its own index where there is none; ``[B]`` bool, whether there is one).

    Example:
        >>> next_in_session(torch.tensor([7, 3, 7, 7]))
        (tensor([2, 1, 3, 3]), tensor([ True, False,  True, False]))
    """
    b = group.numel()
    order = torch.argsort(group, stable=True)
    same = group[order][1:] == group[order][:-1]
    nxt = torch.arange(b, device=group.device)
    has_next = torch.zeros(b, dtype=torch.bool, device=group.device)
    nxt[order[:-1][same]] = order[1:][same]
    has_next[order[:-1][same]] = True
    return nxt, has_next


class RmtlCritics:
    """The critics, their targets and optimizer, and the state captured from the backbone.

    ``critics``: built ones (tests); by default they are built at the first step, once the
    state's width is known, from ``seed`` (so every rank starts from the same weights), or by
    ``load_state_dict`` on ``device`` when resuming.
    """

    def __init__(self, tasks: Sequence[TaskConfig], config: RmtlConfig,
                 critics: SessionCritics | None = None, seed: int = 0,
                 device: torch.device | None = None) -> None:
        self.tasks = tuple(tasks)
        self.device = device or torch.device("cpu")
        self.names = rmtl_tasks(self.tasks)
        self.config = config
        self.seed = seed
        self.state: torch.Tensor | None = None
        self.last_loss: torch.Tensor | None = None
        self.critics: SessionCritics | None = None
        self.target: SessionCritics | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._handle: RemovableHandle | None = None
        self._hooked: nn.Module | None = None
        if critics is not None:
            self._own(critics)

    def attach(self, backbone: nn.Module) -> None:
        """Captures the backbone's input at every forward as the state (once per backbone:
        calling it again each epoch is a no-op; evaluation forwards overwrite it harmlessly,
        a training step reads the state of its own forward)."""
        if self._hooked is backbone:
            return
        if self._handle is not None:
            self._handle.remove()

        def capture(module: nn.Module, args: tuple[Any, ...]) -> None:
            self.state = args[0].detach().float()

        self._handle = backbone.register_forward_pre_hook(capture)
        self._hooked = backbone

    def weights_for(self, outputs: dict[str, torch.Tensor], labels: dict[str, torch.Tensor],
                    group: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """``{task: [B] weights}`` for the forward that produced ``outputs`` (whose state was
        captured), after one update of the critics on its transitions."""
        if self.state is None or group is None:
            raise RuntimeError("loss.weighting=rmtl: no state captured or no group ids; "
                               "attach() to the backbone and set features.group")
        log_probs = task_log_probs({k: v.detach().float() for k, v in outputs.items()},
                                   self.tasks)
        actions = torch.stack([log_probs[n][0].exp() for n in self.names], dim=1)
        rewards = torch.stack([labels[self._label(n)] * log_probs[n][0]
                               + (1 - labels[self._label(n)]) * log_probs[n][1]
                               for n in self.names], dim=1)
        if self.critics is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                critics = SessionCritics(self.state.shape[1], len(self.names),
                                         self.config.critic_layers)
            self._own(critics.to(self.state.device))
        weights = self.update(self.state, actions, rewards, group)
        return {n: weights[:, i] for i, n in enumerate(self.names)}

    def update(self, state: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor,
               group: torch.Tensor) -> torch.Tensor:
        """One TD(0) step of the critics on a batch: ``[B, S]`` states, ``[B, T]`` actions and
        rewards, ``[B]`` group ids; returns the ``[B, T]`` weights of the critics before it."""
        assert self.critics is not None and self.target is not None and self.optimizer is not None
        cfg = self.config
        nxt, has_next = next_in_session(group)
        q = self.critics(state, actions)
        with torch.no_grad():
            weights = 1.0 - cfg.weight_lambda * q
            bootstrap = self.target(state[nxt], actions[nxt])
            target = rewards + cfg.gamma * has_next.unsqueeze(1).to(q.dtype) * bootstrap
        loss = ((q - target) ** 2).mean()
        self.optimizer.zero_grad()
        loss.backward()
        if dist.is_initialized() and dist.get_world_size() > 1:
            for p in self.critics.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= dist.get_world_size()
        self.optimizer.step()
        with torch.no_grad():
            for t, p in zip(self.target.parameters(), self.critics.parameters(), strict=True):
                t.lerp_(p, cfg.target_tau)
        self.last_loss = loss.detach()
        return weights

    def state_dict(self) -> dict[str, Any] | None:
        """The critics, their targets and their optimizer (None before the first step)."""
        if self.critics is None or self.target is None or self.optimizer is None:
            return None
        return {"state_dim": self.critics.state_dim, "critics": self.critics.state_dict(),
                "target": self.target.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Builds the critics for ``state``'s width and restores them, targets and optimizer."""
        critics = SessionCritics(int(state["state_dim"]), len(self.names),
                                 self.config.critic_layers).to(self.device)
        critics.load_state_dict(state["critics"])
        self._own(critics)
        assert self.target is not None and self.optimizer is not None
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])

    def _own(self, critics: SessionCritics) -> None:
        self.critics = critics
        self.target = copy.deepcopy(critics).requires_grad_(False)
        self.optimizer = torch.optim.Adam(critics.parameters(), lr=self.config.critic_lr)

    def _label(self, name: str) -> str:
        return next(t.label for t in self.tasks if t.name == name)
