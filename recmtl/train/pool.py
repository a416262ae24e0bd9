"""A set of training workers kept for many jobs: the daily job trains every day of its window
on the same N processes, so the imports, the process group and Ray's scheduling are paid once.

Each worker is a Ray actor; together they hold one ``torch.distributed`` group (gloo, or NCCL
on cuda) and run ``run_worker`` on each job sent to them, with checkpoints in the job's own
directory (``WorkerJob.checkpoint_root``: a job run again on the same directory resumes from
its newest checkpoint there). The loop is the one Ray Train runs; what the pool does not do is
Ray Train's restart of a failed worker group: a worker that fails ends every worker and the
error reaches the caller, who reruns (the daily job resumes its day).

    with WorkerPool(cfg.train) as pool:
        metrics = pool.run(WorkerJob(cfg, run_dir=..., checkpoint_root=...))
"""

from __future__ import annotations

import datetime as dt
import os
from types import TracebackType
from typing import Any

from recmtl.config.schema import TrainConfig
from recmtl.errors import RecmtlError
from recmtl.train.job import WorkerJob

PROCESS_GROUP_TIMEOUT = dt.timedelta(minutes=10)  # a collective waits at most this long


class _Worker:
    """One rank: joins the group once, then runs job after job."""

    def __init__(self, rank: int, world: int, backend: str) -> None:
        self.rank, self.world, self.backend = rank, world, backend

    def address(self) -> tuple[str, int]:
        """This worker's node address and a free port on it (rank 0 hosts the group)."""
        import socket

        import ray

        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return ray.util.get_node_ip_address(), port

    def join(self, host: str, port: int) -> None:
        import torch.distributed as dist

        os.environ["LOCAL_RANK"] = "0"  # one device per actor: Ray sets CUDA_VISIBLE_DEVICES
        dist.init_process_group(self.backend, init_method=f"tcp://{host}:{port}",
                                rank=self.rank, world_size=self.world,
                                timeout=PROCESS_GROUP_TIMEOUT)

    def run(self, job: dict[str, Any]) -> None:
        from recmtl.train.entry import train_worker

        train_worker({"job": job})


class WorkerPool:
    """``train.num_workers`` Ray actors of ``train.cpus_per_worker`` CPUs (and
    ``gpus_per_worker`` GPUs on cuda) in one process group. Ray must be started."""

    def __init__(self, train: TrainConfig) -> None:
        import ray

        self.num_workers = train.num_workers
        self.device = train.device
        gpus = train.gpus_per_worker if train.device == "cuda" else 0
        backend = "nccl" if train.device == "cuda" else "gloo"
        actor = ray.remote(num_cpus=train.cpus_per_worker, num_gpus=gpus)(_Worker)
        self.workers: list[Any] = [actor.remote(rank, train.num_workers, backend)  # type: ignore[attr-defined]
                                   for rank in range(train.num_workers)]
        host, port = ray.get(self.workers[0].address.remote())
        self._wait([w.join.remote(host, port) for w in self.workers], "joining the group")

    def run(self, job: WorkerJob) -> None:
        """Runs ``job`` on every rank (``job.checkpoint_root`` must be set); returns when all
        are done. The first worker to fail ends the others and its error is raised: a
        ``RecmtlError`` as it was, anything else as Ray reports it."""
        if not job.checkpoint_root:
            raise ValueError("a pool job keeps its checkpoints in job.checkpoint_root")
        raw = job.to_dict()
        self._wait([w.run.remote(raw) for w in self.workers], "training")

    def _wait(self, refs: list[Any], step: str) -> None:
        import ray

        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                ray.get(done[0])
            except Exception as e:  # noqa: BLE001 - any worker failure ends the pool
                self.close()
                raise _user_error(e) or RuntimeError(
                    f"worker pool: a worker failed while {step}: {e}") from e

    def close(self) -> None:
        import ray

        for worker in self.workers:
            ray.kill(worker)
        self.workers = []

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _user_error(error: BaseException) -> RecmtlError | None:
    """The ``RecmtlError`` a worker raised (Ray wraps it as ``RayTaskError.cause``)."""
    seen: list[BaseException | None] = [error]
    while seen:
        e = seen.pop()
        if isinstance(e, RecmtlError):
            return e
        if e is not None:
            seen += [getattr(e, "cause", None), e.__cause__]
    return None
