"""What rank 0 shows and logs while training: one progress bar, per-step metrics to MLflow,
per-epoch validation and expert health. Other ranks get an object that does nothing.

Under Ray, rank 0 does not draw: it appends events to ``<run dir>/progress.jsonl`` and the
driver draws the one bar from them (``ProgressView``), so the terminal shows a bar that
updates in place rather than Ray's forwarded copies of every refresh. Under torchrun (no
driver) rank 0 draws it itself.

    {"event": "epoch_start", "epoch": 0, "steps": 489, "first": 0}
    {"event": "log", "step": 20, "loss": 1.0431, "samples_s": 33919.0}
    {"event": "epoch_end", "epoch": 0, "metrics": {"valid/auc_ctr": 0.8172, ...}}
    {"event": "resumed", "epoch": 0, "batch": 40, "global_step": 40}

Each line also carries ``"t"``, its wall-clock time, so ``epoch_seconds`` can tell the time
spent in epochs (steps and validation) from the job's start-up.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from recmtl.train.job import WorkerJob

if TYPE_CHECKING:
    from recmtl.train.tracking import MetricBuffer

EVENTS = "progress.jsonl"


class Progress:
    """Rank 0's view of training. ``log`` sends step metrics to MLflow, ``epoch_end`` the
    epoch's; the MLflow run itself belongs to the driver."""

    def __init__(self, job: WorkerJob, rank: int, world: int) -> None:
        self.world = world
        self.active = rank == 0
        self.tracker: MetricBuffer | None = None
        self.bar: tqdm | None = None
        self.events: Path | None = None
        if self.active and job.run_dir:
            self.events = Path(job.run_dir) / EVENTS
        if self.active and job.tracking:
            # MLflow loads only where a run is tracked: a bare worker (a benchmark, a GPU
            # machine without MLflow) trains without it
            from recmtl.train.tracking import MetricBuffer

            spill = Path(job.run_dir or ".") / "mlflow-unlogged-metrics.jsonl"
            self.tracker = MetricBuffer(job.tracking.uri, job.tracking.run_id, spill)

    def log_text(self, text: str, artifact: str) -> None:
        if self.tracker:
            with contextlib.suppress(Exception):  # an artifact is worth a warning, not the run
                self.tracker.client.log_text(self.tracker.run_id, text, artifact)

    def log_json(self, value: dict[str, Any], artifact: str) -> None:
        if self.tracker:
            with contextlib.suppress(Exception):  # an artifact is worth a warning, not the run
                self.tracker.client.log_dict(self.tracker.run_id, value, artifact)

    def resumed(self, progress: dict[str, int]) -> None:
        self._emit({"event": "resumed"} | progress)

    def epoch_start(self, epoch: int, steps: int, first: int, global_step: int) -> None:
        """A new bar; steps before ``first`` were trained before a restart."""
        self.base, self.last_step, self.last_time = global_step, first, time.perf_counter()
        self._emit({"event": "epoch_start", "epoch": epoch, "steps": steps, "first": first})

    def log(self, step: int, losses: dict[str, float], rows: int, extra: dict[str, float]) -> None:
        """``rows`` trained by this rank since the last call; ``step`` counts this epoch's
        steps since ``first``."""
        now = time.perf_counter()
        rate = rows * self.world / max(now - self.last_time, 1e-9)
        self.last_time = now
        self._emit({"event": "log", "step": step, "loss": sum(losses.values()), "samples_s": rate})
        if self.tracker:
            metrics = {f"train/loss_{n}": v for n, v in losses.items()}
            self.tracker.add(metrics | extra | {"train/samples_per_s": rate}, self.base + step)
            self.tracker.flush()

    def epoch_end(self, epoch: int, metrics: dict[str, Any], diagnostics: dict[str, Any],
                  flat_diagnostics: dict[str, float], step: int) -> None:
        valid = {k: v for k, v in metrics.items() if k.startswith("valid/")}
        self._emit({"event": "epoch_end", "epoch": epoch, "metrics": valid})
        if self.tracker:
            self.tracker.add({k: float(v) for k, v in metrics.items()} | flat_diagnostics, step)
            self.tracker.flush()
            self.log_json(diagnostics, f"diagnostics/epoch-{epoch:04d}.json")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tracker:
            self.tracker.close()

    def _emit(self, event: dict[str, Any]) -> None:
        if not self.active:
            return
        if self.events is not None:
            with self.events.open("a") as f:  # "t": wall clock, so loop time is readable later
                f.write(json.dumps(event | {"t": round(time.time(), 3)}) + "\n")
        else:
            self.bar = render(event, self.bar)


def epoch_seconds(run_dir: str | Path) -> float | None:
    """Seconds between each epoch's start and end events, summed; None without events."""
    path = Path(run_dir) / EVENTS
    if not path.exists():
        return None
    total, start = 0.0, None
    for line in path.read_text().splitlines():
        event = json.loads(line)
        if event["event"] == "epoch_start":
            start = event.get("t")
        elif event["event"] == "epoch_end" and start is not None and "t" in event:
            total, start = total + event["t"] - start, None
    return round(total, 1)


def render(event: dict[str, Any], bar: tqdm | None) -> tqdm | None:
    """Draws one event on this terminal; returns the bar now in use."""
    kind = event["event"]
    if kind == "epoch_start":
        if bar is not None:
            bar.close()
        bar = tqdm(total=event["steps"], initial=event["first"], desc=f"epoch {event['epoch']}",
                   unit="step", mininterval=1.0, ncols=100)
        bar.first = event["first"]  # type: ignore[attr-defined]
    elif kind == "log" and bar is not None:
        bar.update(bar.first + event["step"] - bar.n)  # type: ignore[attr-defined]
        bar.set_postfix(samples_s=f"{event['samples_s']:,.0f}", loss=f"{event['loss']:.4f}")
    elif kind == "epoch_end":
        if bar is not None:
            bar.close()
            bar = None
        print(f"epoch {event['epoch']}: " + " ".join(
            f"{k}={v:.4f}" for k, v in event["metrics"].items()), flush=True)
    elif kind == "resumed":
        tqdm.write(f"resumed at epoch {event['epoch']}, batch {event['batch']}, "
                   f"step {event['global_step']}")
    return bar


class ProgressView:
    """The driver's side: follows ``<run_dir>/progress.jsonl`` while training runs and draws
    what it says. A run dir the driver cannot see (another machine) just draws nothing."""

    def __init__(self, run_dir: str | Path, interval_s: float = 0.5) -> None:
        self.path = Path(run_dir) / EVENTS
        self.interval_s = interval_s
        self.offset = 0
        self.bar: tqdm | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._follow, name="recmtl-progress", daemon=True)

    def __enter__(self) -> ProgressView:
        self.thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop.set()
        self.thread.join()
        self._drain()
        if self.bar is not None:
            self.bar.close()

    def _follow(self) -> None:
        while not self.stop.wait(self.interval_s):
            self._drain()

    def _drain(self) -> None:
        if not self.path.exists():
            return
        with self.path.open() as f:
            f.seek(self.offset)
            while (line := f.readline()).endswith("\n"):  # a half-written line waits
                self.offset = f.tell()
                self.bar = render(json.loads(line), self.bar)
