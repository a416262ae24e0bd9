"""A checkpoint written mid-epoch by 2 ranks, resumed by 1 (a lost node, without Ray): the
model reshards, and the one rank trains exactly the rows the two had left."""

import json
import shutil

import torch.distributed as dist
import torch.multiprocessing as mp

from recmtl.config import derive
from recmtl.data.reader import split_evenly
from recmtl.train.checkpoint import load_progress
from recmtl.train.job import WorkerJob
from recmtl.train.sinks import METRICS
from recmtl.train.worker import run_worker, train_readers
from tests.ports import free_port


def _worker(rank, world, port, cfg, root):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        run_worker(WorkerJob(cfg, checkpoint_root=root))
    finally:
        dist.destroy_process_group()


def test_two_ranks_checkpoint_mid_epoch_one_rank_finishes_it(smoke_cfg, tmp_path):
    cfg = derive(smoke_cfg, {"train.checkpoint_every_steps": 20})
    root = tmp_path / "ckpt"
    mp.spawn(_worker, args=(2, free_port(), cfg, str(root)), nprocs=2)
    assert load_progress(root / "epoch-0000-step-00000020") == {
        "epoch": 0, "batch": 20, "global_step": 20, "world": 2}
    shutil.rmtree(root / "epoch-0000")
    shutil.rmtree(root / "epoch-0000-step-00000040")

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0,
                            world_size=1)
    try:
        run_worker(WorkerJob(cfg, checkpoint_root=str(root)))
    finally:
        dist.destroy_process_group()

    steps = train_readers(cfg, 0, 2)[0].num_batches  # ceil(15,000 rows a rank / 256) = 59
    before = sum(sum(split_evenly(train_readers(cfg, r, 2)[0].rows_on_rank(), steps)[:20])
                 for r in range(2))
    assert before == 2 * (14 * 255 + 6 * 254)  # 15,000 rows in 59 steps: 14 of 255, 45 of 254
    metrics = json.loads((root / "epoch-0000" / METRICS).read_text())
    assert metrics["rows_before_resume"] == before
    assert metrics["rows_trained"] == 30000 - before
    assert metrics["world"] == 1
    # One rank takes the whole global batch of 512: what is left in ceil(rows / 512) steps;
    # no mid-epoch checkpoint after a world change (its position would mix two layouts).
    assert load_progress(root / "epoch-0000") == {
        "epoch": 1, "batch": 0, "global_step": 20 + -(-(30000 - before) // 512), "world": 1}
    assert sorted(p.name for p in root.iterdir()) == ["epoch-0000", "epoch-0000-step-00000020"]
