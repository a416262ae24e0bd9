"""What rank 0 shows and logs while training: one progress bar, per-step metrics to MLflow,
per-epoch validation and expert health. Other ranks get an object that does nothing."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from recmtl.train.job import WorkerJob
from recmtl.train.tracking import MetricBuffer


class Progress:
    """Rank 0's view of training. ``step_metrics`` are logged at ``log`` calls, epoch metrics
    at ``epoch_end``; the MLflow run itself belongs to the driver."""

    def __init__(self, job: WorkerJob, rank: int, world: int) -> None:
        self.world = world
        self.active = rank == 0
        self.tracker: MetricBuffer | None = None
        self.bar: tqdm | None = None
        if self.active and job.tracking:
            spill = Path(job.run_dir or ".") / "mlflow-unlogged-metrics.jsonl"
            self.tracker = MetricBuffer(job.tracking.uri, job.tracking.run_id, spill)

    def log_text(self, text: str, artifact: str) -> None:
        if self.tracker:
            with contextlib.suppress(Exception):  # an artifact is worth a warning, not the run
                self.tracker.client.log_text(self.tracker.run_id, text, artifact)

    def epoch_start(self, epoch: int, steps: int, first: int, global_step: int) -> None:
        """A new bar; steps before ``first`` were trained before a restart."""
        self.base, self.last_step, self.last_time = global_step, 0, time.perf_counter()
        if self.active:
            self.bar = tqdm(total=steps, initial=first, desc=f"epoch {epoch}", mininterval=5.0,
                            unit="step", ncols=100)

    def log(self, step: int, losses: dict[str, float], rows: int, extra: dict[str, float]) -> None:
        """``rows`` trained by this rank since the last call, ``step`` counted in this epoch."""
        now = time.perf_counter()
        rate = rows * self.world / max(now - self.last_time, 1e-9)
        if self.bar is not None:
            self.bar.update(step - self.last_step)
            self.bar.set_postfix(samples_s=f"{rate:,.0f}", loss=f"{sum(losses.values()):.4f}")
        self.last_step, self.last_time = step, now
        if self.tracker:
            metrics = {f"train/loss_{n}": v for n, v in losses.items()}
            self.tracker.add(metrics | extra | {"train/samples_per_s": rate}, self.base + step)
            self.tracker.flush()

    def epoch_end(self, epoch: int, metrics: dict[str, Any], diagnostics: dict[str, Any],
                  flat_diagnostics: dict[str, float], step: int) -> None:
        if self.bar is not None:
            self.bar.close()
        if not self.active:
            return
        if self.tracker:
            self.tracker.add({k: float(v) for k, v in metrics.items()} | flat_diagnostics, step)
            self.tracker.flush()
            self.log_text_json(diagnostics, f"diagnostics/epoch-{epoch:04d}.json")
        print(f"epoch {epoch}: " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items()
                                            if k.startswith("valid/")), flush=True)

    def log_text_json(self, value: dict[str, Any], artifact: str) -> None:
        if self.tracker:
            with contextlib.suppress(Exception):  # buffered metrics carry on; the JSON is extra
                self.tracker.client.log_dict(self.tracker.run_id, value, artifact)

    def close(self) -> None:
        if self.tracker:
            self.tracker.close()
