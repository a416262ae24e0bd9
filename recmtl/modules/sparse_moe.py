"""Task-aware sparse Mixture-of-Experts: each sample runs through k of the E experts only.

Like MMoE, ``[B, in] -> [T, B, D]`` over E shared experts, but task t's weights over the experts
are a top-k softmax: its router's logits at the k chosen experts are renormalised with a
softmax over those k alone, every other expert gets exactly zero and is never evaluated.

Which k (``routing``, two readings of "top-k routing conditioned on the task and the input"):

- ``"task"`` (default): each task picks its own top-k by its own logits (one (task, sample)
  pair, k experts). Tasks may pick different experts, so a sample costs between k and
  ``min(k T, E)`` expert evaluations.
- ``"sample"``: one choice per sample, shared by the tasks: the k experts with the largest
  mean over tasks of the task routers' softmax probabilities. Each task then weighs those k by
  its own logits. A sample costs exactly k expert evaluations, whatever the number of tasks;
  the tasks can no longer keep apart in the experts they use.

Routers (two readings of "a router conditioned on the input and a task embedding"):

- ``shared_router=False`` (default): one linear router per task, ``logits_t = W_t x + b_t``
  (the task embedding is implicit in ``W_t, b_t``); the same parameters as ``SoftmaxGate``.
- ``shared_router=True``: one linear router over ``concat(x, e_t)`` with a learned task
  embedding ``e_t``. A linear map of a concatenation is ``W_x x + (W_e e_t + b)``, so this is
  computed as one shared ``[B, E]`` projection plus a per-task bias: fewer parameters, tasks
  differ only by an input-independent offset to the logits.

Dispatch is by index: the (task, sample) pairs routed to expert e are gathered and only those
rows go through e (k rows per (task, sample), not E), and the weighted outputs are scatter-added
into ``[T, B, D]``. With ``deduplicate=True`` a sample that several tasks send to the same
expert runs through it once and the output is shared (same result, fewer rows).

Capacity: with ``capacity_factor=c`` expert e accepts at most ``ceil(c * k * B / E)``
assignments (``ceil(c * k * T * B / E)`` in task routing, where an assignment is a (task, sample)
pair). Priority goes to first choices: all slot-1 assignments (in task, then sample order)
before any slot-2 assignment, as in GShard. An assignment over capacity is dropped: its expert
is not evaluated for it and its weight counts as zero; the kept weights are **not**
renormalised, so a (task, sample) that loses every assignment outputs zeros. Capacity counts
routing assignments, before deduplication, so ``deduplicate`` never changes the output.

Load balance (Switch Transformer / GShard): ``E * sum_e f_e P_e``, with ``f_e`` the fraction of
the ``k * B`` top-k selections (before capacity) that go to e and ``P_e`` the batch mean of the
selection score of e (the full softmax router probability; in sample routing its mean over
tasks); in task routing one per task, averaged. Left on ``self.aux_loss`` after each forward
(1.0 when perfectly uniform). Add ``alpha * aux_loss`` to the training loss.

``torch.export``: index dispatch has data-dependent shapes, so while exporting (or with
``sparse_dispatch=False``) every expert runs on every sample and the same top-k weights, drops
included, mix them: identical outputs, dense compute.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from recmtl.modules.gates import mix_experts
from recmtl.modules.mlp import BatchedExperts

Routing = Literal["sample", "task"]


class TaskSparseMoE(nn.Module):
    """``[B, in_features] -> [T, B, D]``: T top-k mixtures over E experts, sparse evaluation.

    Args:
        experts: E experts ``[B, in] -> [E, B, D]`` (``BatchedExperts`` without batch norm,
            whose statistics would depend on which rows were routed). Sparse dispatch runs its
            per-expert weights on the routed rows; dense evaluation calls it as it is.
        in_features: the input width (the router's too).
        num_tasks: T.
        k: experts per sample (``routing="sample"``) or per (task, sample), ``1 <= k <= E``.
        routing: ``"task"`` (one top-k per task and sample) or ``"sample"`` (one per sample).
        capacity_factor: c; at most ``ceil(c * k * B / E)`` assignments per expert, times T in
            task routing (None: no limit).
        shared_router: one router over ``concat(x, task embedding)`` instead of one per task.
        task_embedding_dim: width of the task embedding (``shared_router`` only).
        deduplicate: run a sample through an expert once however many tasks chose it.
        sparse_dispatch: False evaluates every expert densely (always so under export).

    After a forward: ``aux_loss`` (scalar, load-balancing loss with gradient),
    ``last_utilisation`` ``[T, E]`` (the share of task t's top-k selections that went to e,
    before capacity; rows sum to 1; in sample routing the tasks share the selections, so every
    row is the same: how much each task leans on e is its gate mass), ``last_drop_fraction``
    ``[T]`` (fraction of task t's assignments over capacity) and ``last_expert_rows`` ``[E]``
    (rows each expert processed). Not set while exporting.

    Example:
        >>> experts = BatchedExperts(in_features=8, layer_sizes=[16, 4], num_experts=6)
        >>> moe = TaskSparseMoE(experts=experts, in_features=8, num_tasks=3, k=2)
        >>> moe(torch.zeros(5, 8)).shape
        torch.Size([3, 5, 4])
    """

    aux_loss: torch.Tensor | None
    last_utilisation: torch.Tensor | None
    last_drop_fraction: torch.Tensor | None
    last_expert_rows: torch.Tensor | None

    def __init__(self, *, experts: BatchedExperts, in_features: int, num_tasks: int, k: int,
                 routing: Routing = "task", capacity_factor: float | None = None,
                 shared_router: bool = False,
                 task_embedding_dim: int = 16, deduplicate: bool = True,
                 sparse_dispatch: bool = True) -> None:
        super().__init__()
        num_experts = experts.num_experts
        if experts.norms is not None:
            raise ValueError("TaskSparseMoE needs experts without batch norm (normalize=False)")
        if int(experts.weights[0].shape[1]) != in_features:
            raise ValueError(f"experts read {experts.weights[0].shape[1]} features, "
                             f"in_features is {in_features}")
        if not 1 <= k <= num_experts:
            raise ValueError(f"k must be in [1, {num_experts}], got {k}")
        if routing not in ("sample", "task"):
            raise ValueError(f"routing must be 'sample' or 'task', got {routing!r}")
        if capacity_factor is not None and capacity_factor <= 0:
            raise ValueError(f"capacity_factor must be positive, got {capacity_factor}")
        self.experts = experts
        self.num_tasks, self.num_experts, self.k = num_tasks, num_experts, k
        self.routing = routing
        self.capacity_factor = capacity_factor
        self.shared_router = shared_router
        self.deduplicate = deduplicate
        self.sparse_dispatch = sparse_dispatch
        self.output_dim = experts.output_dim
        if shared_router:
            self.router = nn.Linear(in_features, num_experts)  # W_x, b
            self.task_embedding = nn.Parameter(torch.randn(num_tasks, task_embedding_dim))
            self.task_router = nn.Linear(task_embedding_dim, num_experts, bias=False)  # W_e
        else:
            self.router = nn.Linear(in_features, num_tasks * num_experts)
        self.aux_loss = None
        self.last_utilisation = None
        self.last_drop_fraction = None
        self.last_expert_rows = None

    def router_logits(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in] -> [T, B, E]`` router logits."""
        if self.shared_router:
            task_bias = self.task_router(self.task_embedding)  # [T, E]
            return self.router(x).unsqueeze(0) + task_bias.unsqueeze(1)
        return self.router(x).view(x.shape[0], self.num_tasks, self.num_experts).transpose(0, 1)

    def capacity(self, batch_size: int) -> float | None:
        """Assignments per expert a batch of B allows before the ceil (None: unlimited):
        ``c * k * B / E``, times T in task routing.

        An integer position p satisfies ``p < ceil(y)`` exactly when ``p < y``, so the
        un-rounded bound is used (it stays symbolic in B under export).
        """
        if self.capacity_factor is None:
            return None
        choosers = self.num_tasks if self.routing == "task" else 1
        return self.capacity_factor * self.k * choosers * batch_size / self.num_experts

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Top-k routing with capacity.

        Returns:
            gates ``[T, B, E]``: renormalised top-k weights, zero off the top-k and where
            dropped; kept ``[T, B, E]`` bool: the assignments experts will serve; and the
            load-balancing loss (scalar).
        """
        logits = self.router_logits(x)
        # Softmax and top-k in at least float32 (the router runs in bfloat16 under autocast).
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        t, b, e = logits.shape
        probs = torch.softmax(logits, dim=-1)  # [T, B, E]
        if self.routing == "sample":
            # One choice per sample, by the tasks' mean probability: [1, B, k].
            score = probs.mean(0, keepdim=True)
            top_experts = score.topk(self.k, dim=-1).indices
            top_weights = torch.softmax(logits.gather(-1, top_experts.expand(t, -1, -1)), dim=-1)
        else:
            score = probs
            top_logits, top_experts = logits.topk(self.k, dim=-1)  # [T, B, k]
            top_weights = torch.softmax(top_logits, dim=-1)
        selected = nn.functional.one_hot(top_experts, e)  # [T or 1, B, k, E] int64
        fraction = selected.sum(2).to(logits.dtype).mean(1) / self.k  # [T or 1, E]
        aux_loss = (e * (fraction * score.mean(1)).sum(-1)).mean()
        keep = torch.ones_like(top_experts, dtype=torch.bool)
        bound = self.capacity(b)
        if bound is not None:
            # Rank of each assignment within its expert, in slot-major, task, sample order.
            order = selected.permute(2, 0, 1, 3).reshape(-1, e)
            rank = (order.cumsum(0) * order).sum(-1) - 1
            keep = (rank < bound).view(self.k, -1, b).permute(1, 2, 0)  # [T or 1, B, k]
        top_experts, keep = top_experts.expand(t, -1, -1), keep.expand(t, -1, -1)
        gates = logits.new_zeros(t, b, e).scatter(-1, top_experts, top_weights * keep)
        kept = torch.zeros(t, b, e, dtype=torch.bool, device=x.device).scatter(-1, top_experts, keep)
        if not torch.compiler.is_exporting():
            self.last_utilisation = fraction.expand(t, -1).detach()
            self.last_drop_fraction = 1.0 - keep.float().mean((1, 2))
        return gates, kept, aux_loss

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates, kept, aux_loss = self.route(x)
        exporting = torch.compiler.is_exporting()
        if self.sparse_dispatch and not exporting:
            out = self._sparse(x, gates, kept)
        else:
            out = mix_experts(gates.to(x.dtype), self.experts(x))  # gates are 0 where dropped
            if not exporting:
                self.last_expert_rows = torch.full((self.num_experts,), x.shape[0])
        if not exporting:
            self.aux_loss = aux_loss
        return out

    def _sparse(self, x: torch.Tensor, gates: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        """Index dispatch: each expert runs on its routed rows only, outputs scatter-added."""
        t, b, e = kept.shape
        if self.deduplicate:
            # One row per (expert, sample) that any task kept, grouped by expert; each row's
            # output goes to every task with that task's gate (zero where it did not keep it).
            row_expert, row_sample = kept.any(0).t().nonzero(as_tuple=True)
            counts = torch.bincount(row_expert, minlength=e)
            hidden = self._run_experts(x.index_select(0, row_sample), counts.tolist())
            weight = gates[:, row_sample, row_expert].to(hidden.dtype)  # [T, R]
            out = hidden.new_zeros(t, b, hidden.shape[1])
            return out.index_add(1, row_sample, weight.unsqueeze(-1) * hidden)
        # One row per kept (task, sample, expert) assignment, grouped by expert.
        expert_idx, task_idx, sample_idx = kept.permute(2, 0, 1).nonzero(as_tuple=True)
        counts = torch.bincount(expert_idx, minlength=e)
        hidden = self._run_experts(x.index_select(0, sample_idx), counts.tolist())
        weight = gates[task_idx, sample_idx, expert_idx].to(hidden.dtype).unsqueeze(1)
        out = hidden.new_zeros(t * b, hidden.shape[1])
        return out.index_add(0, task_idx * b + sample_idx, weight * hidden).view(t, b, -1)

    def _run_experts(self, rows: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """``rows [N, in]`` grouped by expert (``counts[e]`` rows for e) -> ``[N, D]``."""
        self.last_expert_rows = torch.tensor(counts)
        outputs = []
        for expert, h in enumerate(rows.split(counts)):  # an expert with no rows gets [0, in]
            for w, bias in zip(self.experts.weights, self.experts.biases, strict=True):
                # In place: addmm's backward does not read its output.
                h = torch.addmm(bias[expert], h, w[expert]).relu_()
            outputs.append(h)
        return torch.cat(outputs)
