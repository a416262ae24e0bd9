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

import torch

from recmtl.config import TaskConfig
from recmtl.data.batch import Batch
from recmtl.losses import multitask_loss

PHASES = ("data", "forward", "backward", "optimizer")


@dataclass
class EpochStats:
    steps: int = 0
    rows: int = 0  # on this rank
    seconds: float = 0.0
    steady_rows: int = 0  # rows after the warm-up steps
    steady_seconds: float = 0.0
    phase_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))


def run_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: Iterator[Batch],
              tasks: tuple[TaskConfig, ...], device: torch.device, max_steps: int,
              log_every: int, on_log: Callable[[int, list[float], int], None] | None = None,
              warmup_steps: int = 5, time_phases: bool = False,
              after_step: Callable[[int], None] | None = None) -> EpochStats:
    """Trains up to ``max_steps`` steps. ``on_log(step, mean task losses, rows)`` is called
    every ``log_every`` steps and at the end, the only places the step syncs with the host;
    ``after_step(steps done)`` after every step (checkpoints, fault drills)."""
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

    model.train()
    for step in range(max_steps):
        batch = next(batches, None)
        if batch is None:
            break
        batch = batch.to(device, non_blocking=True)
        lap("data")
        loss, per_task = multitask_loss(model(batch.dense, batch.sparse), batch.labels, tasks)
        lap("forward")
        optimizer.zero_grad()
        loss.backward()
        lap("backward")
        optimizer.step()
        lap("optimizer")
        stats.steps += 1
        stats.rows += batch.size
        window_rows += batch.size
        window.append(torch.stack([per_task[t.name] for t in tasks]))
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
