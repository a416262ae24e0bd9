"""Training on N processes without Ray (as torchrun would run it): samples/s, the step split
into data / forward / backward / optimizer, the share of it spent in communication, and the
time to save and restore a sharded checkpoint. Part of `pipelines.bench.training`.

Communication is read from a short ``torch.profiler`` pass on rank 0: the self time of the
main thread in collectives and in waiting on them (torchrec's all-to-alls of ids and pooled
embeddings, DDP's all-reduce). Waiting includes waiting for a slower peer.
"""

from __future__ import annotations

import json
import re
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from recmtl.config import Config, config_from_dict
from recmtl.models.builder import build_model
from recmtl.train.checkpoint import load_sharded, save_sharded
from recmtl.train.loop import StepPlan, run_epoch
from recmtl.train.sharding import shard_model
from recmtl.train.worker import train_readers, worker_device

_COMM = re.compile(r"all2all|alltoall|allreduce|all_reduce|reduce_scatter|all_gather|broadcast|"
                   r"wait\(\)|_wait", re.IGNORECASE)


def communication_ms(prof: Any) -> float:
    """Main-thread self time in collectives and waits (gloo's own threads excluded)."""
    return sum(e.self_cpu_time_total for e in prof.key_averages()
               if _COMM.search(e.key) and not e.key.startswith("gloo:")) / 1e3


def _rank(rank: int, world: int, port: int, raw: dict[str, Any], steps: int, out: str) -> None:
    torch.set_num_threads(max(1, torch.get_num_threads() // world))
    dist.init_process_group("nccl" if raw["train"]["device"] == "cuda" else "gloo",
                            init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        cfg = config_from_dict(raw)
        device = worker_device(cfg)
        dmp, optimizer, _ = shard_model(build_model(cfg, embedding_device="meta"), cfg.train,
                                        device, tables=cfg.features.tables)
        reader, _ = train_readers(cfg, rank, world)
        batches = reader.epoch(0)
        plan = StepPlan.from_config(cfg, device)
        stats = run_epoch(dmp, optimizer, batches, plan, steps, time_phases=not plan.pipelined)
        profiled = min(10, max(steps // 4, 3))
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            timed = run_epoch(dmp, optimizer, batches, plan, profiled, warmup_steps=0)
        with tempfile.TemporaryDirectory() as tmp:
            path = [f"{tmp}/ckpt" if rank == 0 else ""]
            dist.broadcast_object_list(path)  # one directory for all ranks (one machine)
            dist.barrier()
            t0 = time.perf_counter()
            save_sharded(path[0], dmp, optimizer)
            dist.barrier()
            t1 = time.perf_counter()
            load_sharded(path[0], dmp, optimizer)
            dist.barrier()
            t2 = time.perf_counter()
            size = sum(f.stat().st_size for f in Path(path[0]).rglob("*") if f.is_file())
            dist.barrier()  # rank 0's directory goes when it leaves this block
        rows = torch.tensor([stats.steady_rows], dtype=torch.float64)
        dist.all_reduce(rows)
        if rank == 0:
            step_ms = {k: round(v / stats.steps * 1e3, 2) for k, v in stats.phase_seconds.items()}
            comm = communication_ms(prof) / timed.steps
            Path(out).write_text(json.dumps({
                "workers": world, "samples_per_s": rows.item() / stats.steady_seconds,
                "step_ms": step_ms, "communication_ms_per_step": round(comm, 2),
                "communication_share": comm / (timed.seconds / timed.steps * 1e3),
                "checkpoint_save_s": t1 - t0, "checkpoint_restore_s": t2 - t1,
                "checkpoint_mb": size / 2**20}))
    finally:
        dist.destroy_process_group()


def bench_ranks(cfg: Config, steps: int, world: int) -> dict[str, Any]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/result.json"
        mp.spawn(_rank, args=(world, port, cfg.to_dict(), steps, out), nprocs=world)
        return dict(json.loads(Path(out).read_text()))
