"""Row weight decay: the rows a step looks up are scaled by hand-computed factors (decoupled:
``1 - lr * wd``; frequency: ``1 - lr * wd * k / n``), no other row moves, on one rank and on two
ranks of a row-wise table (every rank's ids reach the shard that holds the row); and the
worker loop trains with it."""


import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from recmtl.config import derive
from recmtl.data.reader import ParquetBatchReader
from recmtl.data.schema import FeatureSchema
from recmtl.models.builder import build_model
from recmtl.train.row_decay import build_row_decay
from recmtl.train.sharding import shard_model
from tests.ports import free_port

WEIGHT = "embeddings.embedding_bags.user.weight"


def _decay_cfg(cfg, wd, mode):
    tables = [t | {"weight_decay": wd, "weight_decay_mode": mode} if t["name"] == "user" else t
              for t in cfg.to_dict()["features"]["tables"]]
    return derive(cfg, {"features.tables": tables})


def _whole(dmp):
    """The user table as one tensor (row-wise shards gathered to every rank)."""
    weight = dmp.state_dict()[WEIGHT]
    if not hasattr(weight, "local_shards"):
        return weight.detach().clone()
    full = torch.zeros(weight.size()) if dist.get_rank() == 0 else None
    weight.gather(0, full)
    out = full if full is not None else torch.zeros(weight.size())
    dist.broadcast(out, 0)
    return out


def _batches(cfg, rank, world, n):
    reader = ParquetBatchReader(f"{cfg.data.root}/train", FeatureSchema.from_config(cfg), 128,
                                rank, world)
    return [b for _, b in zip(range(n), reader.epoch(0), strict=False)]


def _run(rank, world, port, cfg, sharding, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    dmp, _, _ = shard_model(build_model(cfg, embedding_device="meta"), cfg.train,
                            torch.device("cpu"), sharding, tables=cfg.features.tables)
    hook = build_row_decay(cfg, dmp, lambda: 0.5)  # half the base rate: the schedule counts
    snapshots = [_whole(dmp)]
    ids = []
    for batch in _batches(cfg, rank, world, 2):
        hook(batch.sparse)
        snapshots.append(_whole(dmp))
        ids.append(batch.sparse["user_id"].values())
    gathered = [[torch.zeros(0, dtype=torch.int64)] * world for _ in ids]
    for step, local in enumerate(ids):
        dist.all_gather_object(gathered[step], local)
    if rank == 0:
        torch.save({"snapshots": snapshots, "ids": [torch.cat(g) for g in gathered]},
                   out / "decay.pt")
    dist.destroy_process_group()



@pytest.mark.parametrize(("world", "mode", "sharding"), [
    (1, "decoupled", {"user": ["table_wise"]}),
    (1, "frequency", {"user": ["column_wise"]}),
    (2, "frequency", {"user": ["row_wise"]}),
])
def test_looked_up_rows_decay_by_the_hand_computed_factor(smoke_cfg, tmp_path, world, mode,
                                                          sharding):
    wd, lr = 0.3, smoke_cfg.train.sparse_lr * 0.5
    cfg = _decay_cfg(smoke_cfg, wd, mode)
    if world == 1:  # in this process: a spawn costs an import of torchrec
        _run(0, 1, free_port(), cfg, sharding, tmp_path)
    else:
        mp.spawn(_run, args=(world, free_port(), cfg, sharding, tmp_path), nprocs=world)
    saved = torch.load(tmp_path / "decay.pt")
    seen = np.zeros(saved["snapshots"][0].shape[0])
    for step, ids in enumerate(saved["ids"]):
        before, after = saved["snapshots"][step].double(), saved["snapshots"][step + 1].double()
        rows, counts = np.unique(ids.numpy(), return_counts=True)
        seen[rows] += counts
        factor = np.ones(len(seen))
        factor[rows] = 1 - lr * wd * (counts / seen[rows] if mode == "frequency" else 1.0)
        expected = before * torch.from_numpy(factor)[:, None]
        assert torch.allclose(after, expected, rtol=1e-6, atol=1e-9), step
        untouched = np.setdiff1d(np.arange(len(seen)), rows)
        assert torch.equal(after[untouched], before[untouched])
    assert mode == "decoupled" or (seen > 1).any()  # some rows were seen twice: k / n < 1


def _train(cfg, root):
    from recmtl.train.checkpoint import load_unsharded
    from recmtl.train.job import WorkerJob
    from recmtl.train.worker import run_worker

    root.mkdir()
    dist.init_process_group("gloo", init_method=f"file://{root / 'pg'}", rank=0, world_size=1)
    try:
        run_worker(WorkerJob(cfg, checkpoint_root=str(root / "ckpt")))
    finally:
        dist.destroy_process_group()
    return load_unsharded(cfg, root / "ckpt" / "epoch-0000").embeddings.embedding_bags["user"].weight


def test_the_worker_loop_decays_the_rows_it_trains(smoke_cfg, tmp_path):
    steps = {"train.max_steps_per_epoch": 6}
    plain = _train(derive(smoke_cfg, steps), tmp_path / "plain")
    decayed = _train(derive(_decay_cfg(smoke_cfg, 2.0, "decoupled"), steps), tmp_path / "decay")
    moved = (plain != decayed).any(dim=1)
    assert 0 < int(moved.sum()) < plain.shape[0]  # the looked-up rows, not the table
    assert decayed[moved].norm(dim=1).mean() < plain[moved].norm(dim=1).mean()
