"""Where a worker's checkpoints go and where a restarted worker finds them: Ray Train's
reported checkpoints, or one shared directory (torchrun, tests). Also the fault drill."""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist

from recmtl.train.checkpoint import PROGRESS, load_progress, load_sharded, save_progress, save_sharded

START = {"epoch": 0, "batch": 0, "global_step": 0}


class CheckpointSink(Protocol):
    def restore(self, model: torch.nn.Module, optimizer: Any) -> dict[str, int]:
        """Loads the newest checkpoint into the sharded model and optimizers, if there is one;
        returns its progress (epoch, next batch, global step), else the start."""
        ...

    def save(self, name: str, model: torch.nn.Module, optimizer: Any, progress: dict[str, int],
             metrics: dict[str, Any]) -> None:
        """Every rank writes its shards (rank 0 the progress) as checkpoint ``name`` (collective)."""
        ...

    def wait_until_saved(self) -> None:
        """Returns once every checkpoint saved so far would survive this process dying."""
        ...


class DirectorySink:
    """Checkpoints in ``root/<name>`` on storage every rank can reach."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def restore(self, model: torch.nn.Module, optimizer: Any) -> dict[str, int]:
        found = [p for p in self.root.glob("epoch-*") if (p / PROGRESS).exists()]
        if not found:
            return dict(START)
        path = max(found, key=lambda p: load_progress(p)["global_step"])
        load_sharded(path, model, optimizer)
        return load_progress(path)

    def save(self, name: str, model: torch.nn.Module, optimizer: Any, progress: dict[str, int],
             metrics: dict[str, Any]) -> None:
        path = self.root / name
        save_sharded(path, model, optimizer)
        if dist.get_rank() == 0:
            save_progress(path, progress)
        dist.barrier()

    def wait_until_saved(self) -> None:
        pass  # written synchronously


class RaySink:
    """Checkpoints reported to Ray Train (``ray.train.report``); a restarted worker group gets
    the latest back from ``ray.train.get_checkpoint``."""

    def restore(self, model: torch.nn.Module, optimizer: Any) -> dict[str, int]:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return dict(START)
        with checkpoint.as_directory() as path:
            load_sharded(path, model, optimizer)
            return load_progress(path)

    def save(self, name: str, model: torch.nn.Module, optimizer: Any, progress: dict[str, int],
             metrics: dict[str, Any]) -> None:
        import ray.train

        with tempfile.TemporaryDirectory() as tmp:
            save_sharded(tmp, model, optimizer)
            if dist.get_rank() == 0:
                save_progress(tmp, progress)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                             checkpoint_dir_name=name)

    def wait_until_saved(self) -> None:
        """The controller takes in reports every ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`` (2 s): a
        crash within that window of a report would restart from the checkpoint before it."""
        import ray.train

        ray.train.get_all_reported_checkpoints(timeout_s=60)


def fault_drill(step: int, marker_dir: str | None, sink: CheckpointSink) -> None:
    """Kills this worker process (SIGKILL, no cleanup) the first time the run reaches ``step``;
    a marker file under ``marker_dir`` keeps the restarted run from dying again."""
    if not marker_dir:
        return
    marker = Path(marker_dir) / f"fault-drill-step-{step}"
    if marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    sink.wait_until_saved()
    print(f"fault drill: killing rank {dist.get_rank()} (pid {os.getpid()}) at step {step}",
          flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
