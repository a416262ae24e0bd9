"""The training loop of one worker: a plain function that Ray Train launches (or torchrun).

Each worker reads its own shard of the Parquet rows, trains the torchrec-sharded model, scores
its validation shard, and at every epoch end writes its checkpoint shards through its sink.
Rank 0 alone talks to MLflow and draws the progress bar (``progress.py``).

    run_worker(WorkerJob(cfg, checkpoint_root="ckpt"))   # torchrun, tests
    entry.train_worker({"job": job.to_dict()})           # what Ray Train calls
"""

from __future__ import annotations

import os
import resource
import socket
from typing import Any

import torch
import torch.distributed as dist

from recmtl.config import Config
from recmtl.data.oov import OovDropout, rare_ids
from recmtl.data.reader import ParquetBatchReader
from recmtl.data.reshard import rest_of_epoch, rows_done
from recmtl.data.schema import FeatureSchema
from recmtl.logs import quiet_third_party
from recmtl.models.builder import build_model
from recmtl.modules.diagnostics import ExpertProbe, flat_metrics
from recmtl.modules.numeric import quantile_edges
from recmtl.train.checkpoint import Replicated
from recmtl.train.job import WorkerJob
from recmtl.train.loop import EpochHooks, EpochStats, StepPlan, run_epoch
from recmtl.train.managed import Admission
from recmtl.train.progress import Progress
from recmtl.train.rec_metrics import build_rec_metrics, computed
from recmtl.train.row_decay import build_row_decay
from recmtl.train.schedule import LRSchedule
from recmtl.train.sharding import shard_model
from recmtl.train.sinks import START, CheckpointSink, DirectorySink, RaySink, fault_drill, node_drill
from recmtl.train.validation import reduced_summary, validation_auc
from recmtl.train.warm_start import read_remaps, warm_start
from recmtl.train.warm_state import settle


def worker_device(cfg: Config) -> torch.device:
    if cfg.train.device == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    return torch.device("cpu")


def node_id() -> str:
    """The Ray node this worker runs on (its host name outside Ray)."""
    import sys

    if "ray" in sys.modules:  # never imported by torchrun or single-process runs
        import ray

        if ray.is_initialized():
            return str(ray.get_runtime_context().get_node_id())
    return socket.gethostname()


def train_readers(cfg: Config, rank: int, world: int) -> tuple[ParquetBatchReader, ParquetBatchReader]:
    """This rank's train and validation readers; ``data.batch_size`` is the global batch."""
    schema = FeatureSchema.from_config(cfg)
    root = cfg.data.root.rstrip("/")
    per_rank = -(-cfg.data.batch_size // world)
    train = ParquetBatchReader(f"{root}/train", schema, per_rank, rank, world,
                               shuffle=cfg.data.shuffle, seed=cfg.seed, prefetch=cfg.data.prefetch)
    valid = ParquetBatchReader(f"{root}/valid", schema, cfg.data.eval_batch_size, rank, world)
    return train, valid


EDGE_ROWS = 65536  # train rows whose quantiles give piecewise_linear's bin edges


def numeric_edges(cfg: Config) -> list[list[float]] | None:
    """Bin edges of ``model.numeric_encoding: piecewise_linear``: ``numeric_bins`` quantiles of
    each dense column over the first ``EDGE_ROWS`` train rows, read unshuffled and unsharded
    so that every rank computes the same edges. None for the other encodings."""
    if cfg.model.numeric_encoding != "piecewise_linear" or not cfg.features.dense:
        return None
    reader = ParquetBatchReader(f"{cfg.data.root.rstrip('/')}/train", FeatureSchema.from_config(cfg),
                                EDGE_ROWS)
    dense = next(iter(reader.epoch(0))).dense
    return quantile_edges(dense.double().numpy(), cfg.model.numeric_bins)


def oov_dropout(cfg: Config, rank: int) -> OovDropout | None:
    """``train.oov_dropout`` over the vocabulary features of ``data.root`` (None when off, or
    when the data has no vocabulary: not from ``recmtl prepare``, or no ``vocab`` table)."""
    drop = cfg.train.oov_dropout
    if drop.rate <= 0:
        return None
    rare = rare_ids(cfg.data.root, drop.max_count, [f.name for f in cfg.features.sparse])
    return OovDropout(rare, drop.rate, cfg.seed, rank) if rare else None


def run_worker(job: WorkerJob) -> None:
    """Trains ``job`` on this rank of an initialised process group, resuming from the sink's
    newest checkpoint if there is one."""
    if job.quiet:
        quiet_third_party()
    run = WorkerRun(job)
    try:
        for epoch in range(run.progress_at["epoch"], job.config.train.epochs):
            run.train_epoch(epoch)
    finally:
        run.progress.close()


class WorkerRun:
    """Everything one rank holds while training: the sharded model and its optimizers, the
    readers, the LR schedule, the checkpoint sink and rank 0's progress."""

    def __init__(self, job: WorkerJob) -> None:
        cfg = self.cfg = job.config
        self.job = job
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.device = worker_device(cfg)
        model = build_model(cfg, embedding_device="meta", numeric_edges=numeric_edges(cfg))
        self.model, self.optimizer, plan = shard_model(model, cfg.train, self.device,
                                                       tables=cfg.features.tables)
        self.plan = StepPlan.from_config(cfg, self.device)
        replicated: dict[str, Replicated] = ({"rmtl": self.plan.rmtl}
                                             if self.plan.rmtl is not None else {})
        self.sink: CheckpointSink = (DirectorySink(job.checkpoint_root, replicated)
                                     if job.checkpoint_root else RaySink(replicated))
        self.progress = Progress(job, self.rank, self.world)
        self.progress.log_text(str(plan), "sharding_plan.txt")
        self.train_reader, self.valid_reader = train_readers(cfg, self.rank, self.world)
        self.oov = oov_dropout(cfg, self.rank)  # training batches only, never validation
        self.oov_replaced = 0
        self.steps_per_epoch = self.train_reader.num_batches
        if cfg.train.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.train.max_steps_per_epoch)
        self.sparse_opt, self.dense_opt = (opt for _, opt in self.optimizer.optimizers)
        self.schedule = LRSchedule(
            [(cfg.train.sparse_schedule, list(self.sparse_opt.param_groups)),
             (cfg.train.dense_schedule, list(self.dense_opt.param_groups))],
            total_steps=cfg.train.epochs * self.steps_per_epoch)
        self.progress_at = self.sink.restore(self.model, self.optimizer)
        self.resharded_epoch: int | None = None  # the epoch resumed on a changed world size
        if self.progress_at == START and job.warm_start:  # a restart resumes, never re-warms
            carried = warm_start(self.model, self.optimizer, job.warm_start,
                                 read_remaps(job.remap_dir))
            carried["settled"] = settle(self.optimizer, cfg.train.warm_start)
            self.progress.log_json(carried | {"source": job.warm_start}, "warm_start.json")
        self.global_step = self.progress_at["global_step"]
        self.schedule.set_step(self.global_step)
        if self.global_step:
            self.progress.resumed(self.progress_at)
        self.rec_metrics = build_rec_metrics(cfg.tasks, self.train_reader.batch_size, self.device)
        managed = self.model.module.managed_ids
        admission = (Admission(managed, self.model, self.optimizer, cfg.seed + self.global_step)
                     if managed is not None else None)
        decay = build_row_decay(cfg, self.model, lambda: self.schedule.factors[0])
        # Before each forward: managed tables admit the step's ids, then rows decay.
        self.step_hooks = [h for h in (admission, decay) if h is not None]

    def train_epoch(self, epoch: int) -> None:
        """Trains the rest of ``epoch`` (all of it unless resuming), validates, checkpoints."""
        first = self.progress_at["batch"] if epoch == self.progress_at["epoch"] else 0
        base = self.global_step
        batches, steps = self._rest_of_epoch(epoch, first)
        self.progress.epoch_start(epoch, first + steps, first, base)
        hooks = EpochHooks(log_every=self.cfg.train.log_every, on_log=self._on_log,
                           after_step=lambda done: self._after_step(epoch, first, base + done),
                           rec_metrics=self.rec_metrics,
                           before_step=self._before_step if self.step_hooks else None)
        stats = run_epoch(self.model, self.optimizer, batches, self.plan, steps, hooks)
        self.global_step += stats.steps
        metrics = self._validate(epoch, first, stats)
        self.sink.save(f"epoch-{epoch:04d}", self.model, self.optimizer,
                       {"epoch": epoch + 1, "batch": 0, "global_step": self.global_step,
                        "world": self.world}, metrics)

    def _rest_of_epoch(self, epoch: int, first: int) -> tuple[Any, int]:
        """This rank's batches of ``epoch`` from batch ``first`` on and their number. A
        checkpoint taken mid-epoch on another world size (a lost node, an elastic resize)
        is finished by these ranks with the rows its ranks had left (``data/reshard.py``);
        that epoch then writes no more mid-epoch checkpoints, so a second failure in it
        resumes from the same checkpoint, whose position holds for any world size."""
        old_world = self.progress_at.get("world", self.world)
        if first == 0 or old_world == self.world:
            batches, steps = self.train_reader.epoch(epoch, first), self.steps_per_epoch - first
        else:
            self.resharded_epoch = epoch
            batches, steps, _ = rest_of_epoch(self.train_reader, epoch, old_world,
                                              -(-self.cfg.data.batch_size // old_world), first)
            if self.cfg.train.max_steps_per_epoch:
                steps = min(steps, max(1, self.steps_per_epoch - first))
        return (batches if self.oov is None else self._dropped(batches, epoch, first)), steps

    def _dropped(self, batches: Any, epoch: int, first: int) -> Any:
        """The train batches with ``train.oov_dropout`` applied, counting the ids replaced."""
        assert self.oov is not None
        for index, batch in enumerate(batches, start=first):
            batch, replaced = self.oov.apply(batch, epoch, index)
            self.oov_replaced += replaced
            yield batch

    def _rows_before(self, epoch: int, first: int) -> int:
        """Rows of ``epoch`` trained before the checkpoint this run resumed from."""
        if first == 0 or epoch != self.progress_at["epoch"]:
            return 0
        old_world = self.progress_at.get("world", self.world)
        return sum(rows_done(self.train_reader, old_world,
                             -(-self.cfg.data.batch_size // old_world), first))

    def _on_log(self, step: int, losses: list[float], rows: int) -> None:
        tracked = computed(self.rec_metrics)  # collective: every rank computes at this step
        names = [t.name for t in self.cfg.tasks]
        lrs = {"train/lr_sparse": self.sparse_opt.param_groups[0]["lr"],
               "train/lr_dense": self.dense_opt.param_groups[0]["lr"]}
        aux = {"train/aux_loss": losses[len(names)]} if len(losses) > len(names) else {}
        self.progress.log(step, dict(zip(names, losses[:len(names)], strict=True)), rows,
                          lrs | aux | tracked)

    def _before_step(self, sparse: Any) -> None:
        for hook in self.step_hooks:
            hook(sparse)

    def _after_step(self, epoch: int, first: int, step: int) -> None:
        """Schedules, mid-epoch checkpoints and the fault drill, after global step ``step``."""
        train = self.cfg.train
        self.schedule.set_step(step)
        batch = first + step - self.global_step  # batches of this epoch done
        if (train.checkpoint_every_steps and step % train.checkpoint_every_steps == 0
                and batch < self.steps_per_epoch and epoch != self.resharded_epoch):
            self.sink.save(f"epoch-{epoch:04d}-step-{step:08d}", self.model, self.optimizer,
                           {"epoch": epoch, "batch": batch, "global_step": step,
                            "world": self.world}, {"epoch": epoch, "step": step})
        marker_dir = self.job.run_dir or self.job.checkpoint_root
        if train.kill_worker_at_step == step and self.rank == self.world - 1:
            fault_drill(step, marker_dir, self.sink)
        if train.node_drill_at_step == step:
            node_drill(step, marker_dir, self.sink, node_id())

    def _validate(self, epoch: int, first: int, stats: EpochStats) -> dict[str, Any]:
        """Rows trained (checked against the split), validation AUC and expert health, logged
        by rank 0; returns the epoch's metrics (collective)."""
        counts = torch.tensor([stats.rows, stats.steady_rows, self.oov_replaced],
                              dtype=torch.int64, device=self.device)
        self.oov_replaced = 0
        dist.all_reduce(counts)
        rows_trained, steady_rows, oov_replaced = counts.tolist()
        total = self.train_reader.total_rows
        before = self._rows_before(epoch, first)
        if not self.cfg.train.max_steps_per_epoch and before + rows_trained != total:
            raise RuntimeError(f"epoch {epoch}: trained {rows_trained} rows after {before} "
                               f"before the resume, of the {total} in the train split")
        nodes: list[str | None] = [None] * self.world
        dist.all_gather_object(nodes, node_id())
        ranker: Any = self.model.module
        probe = ExpertProbe(ranker.dense_ranker.backbone)
        with probe:
            val = validation_auc(self.cfg.tasks, self.model, self.valid_reader, self.device)
        diagnostics = reduced_summary(probe, self.device)
        metrics: dict[str, Any] = {f"valid/auc_{k}": v for k, v in val.items() if v is not None}
        if self.oov is not None:  # ids sent to the OOV row this epoch, all ranks
            metrics["train/oov_dropout_ids"] = oov_replaced
        metrics |= {"epoch": epoch, "step": self.global_step, "rows_trained": rows_trained,
                    "rows_in_split": total,
                    "train/epoch_samples_per_s": steady_rows / max(stats.steady_seconds, 1e-9),
                    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        self.progress.epoch_end(epoch, metrics, diagnostics, flat_metrics(diagnostics),
                                self.global_step)
        # Not an MLflow metric: where each rank ran, in the run's summary.json.
        return metrics | {"rows_before_resume": before, "world": self.world,
                          "worker_nodes": nodes}
