"""One epoch of training steps, shared by the Ray worker and the benchmark.

With ``time_phases`` the step is split into data wait (reading and building the batch),
forward, backward (which includes the fused sparse update and, across ranks, the embedding
all-to-alls and the dense all-reduce) and the dense optimizer; on CUDA this synchronises at each
boundary, so it is for benchmarks, not production runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import torch

from recmtl.config import Config, LossConfig, TaskConfig
from recmtl.data.batch import Batch
from recmtl.losses import task_losses, weighted_terms
from recmtl.train.pcgrad import PCGrad
from recmtl.train.rec_metrics import metric_inputs
from recmtl.train.rmtl import RmtlCritics

PHASES = ("data", "forward", "backward", "optimizer")
AUX_LOSS = "aux_loss"  # the key of the model's auxiliary loss among the loss terms


@dataclass
class EpochStats:
    steps: int = 0
    rows: int = 0  # on this rank
    seconds: float = 0.0
    steady_rows: int = 0  # rows after the warm-up steps
    steady_seconds: float = 0.0
    phase_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))


@dataclass(frozen=True)
class StepPlan:
    """How every training step of a job computes.

    ``loss`` picks the weighting: uncertainty reads the ranker's ``loss_log_vars``; pcgrad
    projects the per-task gradients of the backbone (the shared dense parameters). ``bf16``
    autocasts the forward; the losses are computed in float32. ``pipelined`` runs the steps
    through torchrec's ``TrainPipelineSparseDist`` (no per-phase timing there). ``aux_weight``:
    the ranker's ``auxiliary_loss()`` (a sparse MoE's load balance) joins the loss terms times
    this (``model.moe_balance_weight``; 0: not read), as one more term for pcgrad. ``rmtl``:
    RMTL's critics (``recmtl.train.rmtl``), kept across epochs; ``from_config`` builds them
    for ``loss.weighting: rmtl`` (left None, each epoch starts new ones).
    """

    tasks: tuple[TaskConfig, ...]
    device: torch.device
    loss: LossConfig = field(default_factory=LossConfig)
    bf16: bool = False
    pipelined: bool = False
    aux_weight: float = 0.0
    rmtl: RmtlCritics | None = None

    @classmethod
    def from_config(cls, cfg: Config, device: torch.device) -> StepPlan:
        rmtl = (RmtlCritics(cfg.tasks, cfg.loss.rmtl, seed=cfg.seed, device=device)
                if cfg.loss.weighting == "rmtl" else None)
        return cls(cfg.tasks, device, cfg.loss, bf16=cfg.train.bf16,
                   pipelined=cfg.train.pipeline == "sparse_dist",
                   aux_weight=cfg.model.moe_balance_weight, rmtl=rmtl)


@dataclass(frozen=True)
class EpochHooks:
    """What the caller sees of an epoch. ``on_log(step, mean losses, rows)`` (the task losses
    in config order, then the auxiliary loss when the model has one) runs every
    ``log_every`` steps and at the end, the only places the step syncs with the host;
    ``after_step(steps done)`` after every step (checkpoints, fault drills); ``rec_metrics``
    (a torchrec ``RecMetricModule``) is updated with every step's predictions;
    ``before_step(sparse)`` sees each training batch's ids before the forward (managed tables'
    admission, ``recmtl.train.managed``, and row weight decay, ``recmtl.train.row_decay``; not
    in pipelined steps)."""

    log_every: int = 0  # 0: only at the end
    on_log: Callable[[int, list[float], int], None] | None = None
    after_step: Callable[[int], None] | None = None
    rec_metrics: Any = None
    before_step: Callable[[Any], None] | None = None


def run_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: Iterator[Batch],
              plan: StepPlan, max_steps: int, hooks: EpochHooks | None = None,
              warmup_steps: int = 5, time_phases: bool = False) -> EpochStats:
    """Trains up to ``max_steps`` steps of ``plan`` on ``batches``; the first ``warmup_steps``
    are left out of the steady-state rate. ``time_phases`` splits each step's time (module
    docstring)."""
    hooks = hooks or EpochHooks()
    tasks, device, loss, bf16 = plan.tasks, plan.device, plan.loss, plan.bf16
    rec_metrics, on_log, after_step = hooks.rec_metrics, hooks.on_log, hooks.after_step
    log_every = hooks.log_every or max_steps
    ranker: Any = getattr(model, "module", model)  # DMP exposes the unwrapped ranker as .module
    log_vars = getattr(ranker, "loss_log_vars", None)
    pcgrad = None
    if loss.weighting == "pcgrad":
        pcgrad = PCGrad(list(ranker.dense_ranker.backbone.parameters()))
    rmtl = plan.rmtl
    if loss.weighting == "rmtl" and rmtl is None:
        rmtl = RmtlCritics(tasks, loss.rmtl)
    if rmtl is not None:
        rmtl.attach(ranker.dense_ranker.backbone)
    stats = EpochStats()
    sync = torch.cuda.synchronize if (time_phases and device.type == "cuda") else (lambda: None)
    window: list[torch.Tensor] = []
    window_rows = 0
    start = steady_start = time.perf_counter()
    mark = start

    def lap(phase: str) -> None:
        """Charges the time since the last lap to ``phase`` (only when timing phases)."""
        nonlocal mark
        if time_phases:
            sync()
            now = time.perf_counter()
            stats.phase_seconds[phase] += now - mark
            mark = now

    def forward_losses(batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor],
                                              dict[str, torch.Tensor]]:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            outputs = model(batch.dense, batch.sparse)
        outputs = {k: v.float() for k, v in outputs.items()}
        row_weights = (rmtl.weights_for(outputs, batch.labels, batch.group)
                       if rmtl is not None else None)
        losses = task_losses(outputs, batch.labels, tasks, loss)  # logged unweighted
        if row_weights is not None:
            terms = weighted_terms(task_losses(outputs, batch.labels, tasks, loss, row_weights),
                                   tasks, loss, log_vars)
        else:
            terms = weighted_terms(losses, tasks, loss, log_vars)
        if rec_metrics is not None:
            rec_metrics.update(metric_inputs(outputs, batch.labels, tasks))
        aux = ranker.auxiliary_loss() if plan.aux_weight else None
        if aux is not None:
            losses[AUX_LOSS] = aux
            terms[AUX_LOSS] = plan.aux_weight * aux
        return torch.stack(list(terms.values())).sum(), terms, losses

    def task_stack(losses: dict[str, torch.Tensor]) -> torch.Tensor:
        names = [t.name for t in tasks] + [AUX_LOSS] * (AUX_LOSS in losses)
        return torch.stack([losses[name].detach() for name in names])

    def plain_steps() -> Iterator[tuple[torch.Tensor, int]]:
        for _ in range(max_steps):
            batch = next(batches, None)
            if batch is None:
                return
            batch = batch.to(device, non_blocking=True)
            if hooks.before_step is not None:
                hooks.before_step(batch.sparse)
            lap("data")
            total, terms, losses = forward_losses(batch)
            lap("forward")
            optimizer.zero_grad()
            if pcgrad is not None:
                pcgrad.prepare(list(terms.values()))
            total.backward()
            if pcgrad is not None:
                pcgrad.apply()
            lap("backward")
            optimizer.step()
            lap("optimizer")
            yield task_stack(losses), batch.size

    def pipelined_steps() -> Iterator[tuple[torch.Tensor, int]]:
        """torchrec's TrainPipelineSparseDist: the ids of batch i + 1 are all-to-all'd to their
        embedding shards while batch i runs forward and backward."""
        from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

        def step_fn(batch: Batch) -> tuple[torch.Tensor, tuple[torch.Tensor, int]]:
            total, _, losses = forward_losses(batch)
            return total, (task_stack(losses), batch.size)

        pipe = TrainPipelineSparseDist(model, optimizer, device, execute_all_batches=True,
                                       custom_model_fwd=step_fn)  # type: ignore[arg-type]
        feed = islice(batches, max_steps)  # never read ahead past this epoch's share
        try:
            while True:
                try:
                    per_task, size = pipe.progress(feed)
                except StopIteration:
                    return
                if not pipe._pipelined_modules:  # torchrec falls back silently; we do not
                    raise RuntimeError("train.pipeline=sparse_dist: torchrec could not pipeline "
                                       "the sharded embeddings of this model")
                yield per_task, size
        finally:
            pipe.detach()  # plain forwards again (validation, export)

    if plan.pipelined and hooks.before_step is not None:
        raise ValueError("managed-collision tables and row weight decay need the plain step "
                         "(train.pipeline: none)")
    if plan.pipelined and (pcgrad is not None or rmtl is not None):
        raise ValueError(f"loss.weighting={loss.weighting} needs the plain step "
                         "(train.pipeline: none)")
    model.train()
    steps = pipelined_steps() if plan.pipelined else plain_steps()
    for step, (per_task, size) in enumerate(steps):
        stats.steps += 1
        stats.rows += size
        window_rows += size
        window.append(per_task)
        if step + 1 == warmup_steps:
            steady_start = time.perf_counter()
            stats.steady_rows = -stats.rows
        if on_log and ((step + 1) % log_every == 0 or step + 1 == max_steps):
            on_log(step + 1, torch.stack(window).mean(0).tolist(), window_rows)
            window, window_rows = [], 0
        if after_step:
            after_step(step + 1)
        mark = time.perf_counter()
    if on_log and window:  # the data ran out before max_steps
        on_log(stats.steps, torch.stack(window).mean(0).tolist(), window_rows)
    end = time.perf_counter()
    stats.seconds = end - start
    if stats.steps > warmup_steps:
        stats.steady_rows += stats.rows
        stats.steady_seconds = end - steady_start
    else:
        stats.steady_rows, stats.steady_seconds = stats.rows, stats.seconds
    return stats
