"""Ray Train's entry point for a worker, kept free of heavy imports: third-party logs are
quieted (unless ``--verbose``) before torchrec and fbgemm load and announce themselves."""

from __future__ import annotations

from typing import Any

from recmtl.logs import quiet_third_party
from recmtl.train.job import WorkerJob


def train_worker(loop_config: dict[str, Any]) -> None:
    """Runs ``{"job": WorkerJob.to_dict()}`` on this Ray Train worker."""
    job = WorkerJob.from_dict(loop_config["job"])
    if job.quiet:
        quiet_third_party()
    from recmtl.train.worker import run_worker

    run_worker(job)
