"""What a training worker is asked to do: one typed description, sent to every worker.

Ray Train hands each worker a plain dict (``train_loop_config``); ``WorkerJob.to_dict`` and
``from_dict`` make that round trip, and everything a worker reads comes from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from recmtl.config import Config, config_from_dict


@dataclass(frozen=True)
class Tracking:
    """The MLflow run that rank 0 logs into (the driver owns and ends it)."""

    uri: str
    run_id: str


@dataclass(frozen=True)
class WorkerJob:
    """One training job as its workers see it.

    Args:
        config: the validated run configuration.
        run_dir: the run's directory (unlogged-metric spill, fault-drill marker); None in tests.
        tracking: where rank 0 logs metrics; None logs nothing.
        checkpoint_root: checkpoints go into this shared directory and the newest one found
            there is resumed (torchrun and single-process tests); None hands them to Ray Train.
        quiet: keep known third-party warnings and logs out of the output (``--verbose``: not).
        warm_start: a checkpoint to start from when there is none to resume (yesterday's
            model, ``warm_start.py``); its tables may be smaller and differently sharded.
        remap_dir: ``remap/`` of today's data (`recmtl prepare --previous`): how rows moved.
    """

    config: Config
    run_dir: str | None = None
    tracking: Tracking | None = None
    checkpoint_root: str | None = None
    quiet: bool = True
    warm_start: str | None = None
    remap_dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "run_dir": self.run_dir,
                "tracking": vars(self.tracking) if self.tracking else None,
                "checkpoint_root": self.checkpoint_root, "quiet": self.quiet,
                "warm_start": self.warm_start, "remap_dir": self.remap_dir}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> WorkerJob:
        tracking = Tracking(**raw["tracking"]) if raw.get("tracking") else None
        return cls(config_from_dict(raw["config"], source="<worker job>"),
                   run_dir=raw.get("run_dir"), tracking=tracking,
                   checkpoint_root=raw.get("checkpoint_root"), quiet=raw.get("quiet", True),
                   warm_start=raw.get("warm_start"), remap_dir=raw.get("remap_dir"))
