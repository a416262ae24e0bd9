"""Where a worker's checkpoints go and where a restarted worker finds them: Ray Train's
reported checkpoints, or one shared directory (torchrun, tests). Also the fault drill."""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist

from recmtl.train.checkpoint import (
    PROGRESS,
    Replicated,
    load_progress,
    load_replicated,
    load_sharded,
    save_progress,
    save_replicated,
    save_sharded,
)

START = {"epoch": 0, "batch": 0, "global_step": 0}
METRICS = "metrics.json"  # beside a DirectorySink checkpoint: what Ray Train would be reported


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
    """Checkpoints in ``root/<name>`` on storage every rank can reach; ``replicated``: state
    every rank holds alike, saved and restored with the shards."""

    def __init__(self, root: str | Path, replicated: dict[str, Replicated] | None = None) -> None:
        self.root = Path(root)
        self.replicated = replicated or {}

    def restore(self, model: torch.nn.Module, optimizer: Any) -> dict[str, int]:
        path = newest_checkpoint(self.root)
        if path is None:
            return dict(START)
        load_sharded(path, model, optimizer)
        load_replicated(path, self.replicated)
        return load_progress(path)

    def save(self, name: str, model: torch.nn.Module, optimizer: Any, progress: dict[str, int],
             metrics: dict[str, Any]) -> None:
        path = self.root / name
        save_sharded(path, model, optimizer)
        save_replicated(path, self.replicated)
        if dist.get_rank() == 0:
            save_progress(path, progress)
            (path / METRICS).write_text(json.dumps(metrics))
        dist.barrier()

    def wait_until_saved(self) -> None:
        pass  # written synchronously


def newest_checkpoint(root: str | Path) -> Path | None:
    """The checkpoint under ``root`` (a ``DirectorySink``'s) furthest into training: the one
    whose progress has the highest global step; None when there is none."""
    found = [p for p in Path(root).glob("epoch-*") if (p / PROGRESS).exists()]
    return max(found, key=lambda p: load_progress(p)["global_step"]) if found else None


class RaySink:
    """Checkpoints reported to Ray Train (``ray.train.report``); a restarted worker group gets
    the latest back from ``ray.train.get_checkpoint``. ``replicated`` as for ``DirectorySink``."""

    def __init__(self, replicated: dict[str, Replicated] | None = None) -> None:
        self.replicated = replicated or {}

    def restore(self, model: torch.nn.Module, optimizer: Any) -> dict[str, int]:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return dict(START)
        with checkpoint.as_directory() as path:
            load_sharded(path, model, optimizer)
            load_replicated(path, self.replicated)
            return load_progress(path)

    def save(self, name: str, model: torch.nn.Module, optimizer: Any, progress: dict[str, int],
             metrics: dict[str, Any]) -> None:
        import ray.train

        with tempfile.TemporaryDirectory() as tmp:
            save_sharded(tmp, model, optimizer)
            save_replicated(tmp, self.replicated)
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


NODE_DRILL_HOLD_S = 600.0


def node_drill(step: int, marker_dir: str | None, sink: CheckpointSink, node: str) -> None:
    """Holds every rank at ``step``, the first time the run gets there, so that a whole node
    can be killed from outside (``ray stop`` on it; ``Cluster.remove_node`` in the tests and
    ``pipelines/bench/multinode.py``) at a known point: each rank writes its node id to
    ``node-drill-step-<step>/rank-<rank>`` under ``marker_dir`` once the checkpoints before
    are safe, then waits (at most ``NODE_DRILL_HOLD_S``) until Ray ends its worker group."""
    if not marker_dir:
        return
    marker = Path(marker_dir) / f"node-drill-step-{step}"
    if (marker / "done").exists():
        return  # the restarted run goes on
    marker.mkdir(parents=True, exist_ok=True)
    sink.wait_until_saved()
    dist.barrier()  # every rank has seen the marker missing before any rank writes "done"
    rank = dist.get_rank()
    (marker / f"rank-{rank}").write_text(node)
    if rank == 0:
        (marker / "done").touch()
    deadline = time.monotonic() + NODE_DRILL_HOLD_S
    while time.monotonic() < deadline:
        time.sleep(0.2)
