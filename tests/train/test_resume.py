"""Checkpoint, resume and survive a killed worker."""

import shutil
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from recmtl.config import derive
from recmtl.data.reader import split_evenly
from recmtl.train.checkpoint import load_progress, load_unsharded
from recmtl.train.job import WorkerJob
from recmtl.train.launch import fit
from recmtl.train.worker import run_worker, train_readers


def _cfg(cfg, **train):
    return derive(cfg, {f"train.{k}": v for k, v in train.items()})


@pytest.mark.parametrize("weighting", ["fixed", "rmtl"])
def test_resume_from_mid_epoch_checkpoint_matches_uninterrupted(smoke_cfg, tmp_path, weighting):
    """Resumed from step 5, the model at step 12 equals the uninterrupted one. With rmtl the
    loss weights come from the critics, so this holds only if they are restored too (new
    critics from the seed would weigh steps 6..12 differently)."""
    cfg = derive(_cfg(smoke_cfg, max_steps_per_epoch=12, checkpoint_every_steps=5), 
        {"loss.weighting": weighting})
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0,
                            world_size=1)
    try:
        root = tmp_path / "ckpt"
        run_worker(WorkerJob(cfg, checkpoint_root=str(root)))
        names = sorted(p.name for p in root.iterdir())
        assert names == ["epoch-0000", "epoch-0000-step-00000005", "epoch-0000-step-00000010"]
        assert load_progress(root / "epoch-0000-step-00000005") == {
            "epoch": 0, "batch": 5, "global_step": 5, "world": 1}
        shutil.move(root / "epoch-0000", tmp_path / "uninterrupted")
        shutil.rmtree(root / "epoch-0000-step-00000010")
        # Same root: the worker finds step 5, restores shards and optimizers, trains 6..12.
        run_worker(WorkerJob(cfg, checkpoint_root=str(root)))
    finally:
        dist.destroy_process_group()
    assert load_progress(root / "epoch-0000") == {"epoch": 1, "batch": 0, "global_step": 12,
                                                       "world": 1}
    resumed = dict(load_unsharded(cfg, root / "epoch-0000").named_parameters())
    straight = dict(load_unsharded(cfg, tmp_path / "uninterrupted").named_parameters())
    fresh = dict(load_unsharded(cfg, root / "epoch-0000-step-00000005").named_parameters())
    for name, p in straight.items():
        torch.testing.assert_close(resumed[name], p, rtol=0, atol=1e-6, msg=name)
    assert any(not torch.equal(fresh[n], p) for n, p in straight.items())
    has_critics = [(p / "replicated.pt").exists() for p in (root / "epoch-0000", tmp_path / "uninterrupted")]
    assert has_critics == [weighting == "rmtl"] * 2


@pytest.mark.ray
@pytest.mark.heavy  # ~50 s of Ray restarts; tests/train/test_reshard_resume.py resumes in-suite
def test_a_killed_worker_costs_a_checkpoint_window_not_the_run(smoke_cfg, ray_local, tmp_path):
    cfg = _cfg(smoke_cfg, checkpoint_every_steps=20)
    t0 = time.perf_counter()
    _, straight = fit(cfg, tmp_path / "a", None, None)
    straight_s = time.perf_counter() - t0

    drill = _cfg(cfg, kill_worker_at_step=30, max_failures=1)
    t0 = time.perf_counter()
    checkpoint, survived = fit(drill, tmp_path / "b", None, None)
    drill_s = time.perf_counter() - t0
    print(f"uninterrupted {straight_s:.1f}s, with a killed worker {drill_s:.1f}s")

    assert (tmp_path / "b" / "fault-drill-step-30").exists()  # the kill really happened
    steps = train_readers(cfg, 0, 2)[0].num_batches
    assert load_progress(checkpoint) == {"epoch": 1, "batch": 0, "global_step": steps,
                                         "world": 2}
    # The restarted attempt trained from the step-20 checkpoint on: every row after it once.
    total = sum(train_readers(cfg, r, 2)[0].rows_on_rank() for r in range(2))
    before = sum(sum(split_evenly(train_readers(cfg, r, 2)[0].rows_on_rank(), steps)[:20])
                 for r in range(2))
    assert survived["rows_trained"] == total - before
    assert straight["rows_trained"] == total
    for task in ("ctr", "cvr", "ctcvr"):
        key = f"valid/auc_{task}"
        assert abs(survived[key] - straight[key]) <= 0.005, (task, survived[key], straight[key])
    assert Path(checkpoint, ".metadata").exists()
