"""Training on a Ray cluster of two real nodes (``ray.cluster_utils.Cluster``: a head and a
second node, each with its own raylet and one CPU), and losing the second node mid-run."""

import threading

import pytest

from pipelines.bench.multinode import kill_node_at_drill, start_cluster
from recmtl.config import derive
from recmtl.data.reader import split_evenly
from recmtl.train.checkpoint import load_progress
from recmtl.train.launch import fit, scaling_config
from recmtl.train.worker import train_readers
from tests.conftest import start_local_ray


@pytest.fixture(scope="module")
def two_nodes():
    """A head and a second node, one CPU each (two workers cannot share a node); the driver
    joins through ``train.ray_address``. A Ray already running in this process (another
    module's) is shut down first and started again after."""
    import ray

    was_running = ray.is_initialized()
    cluster, nodes = start_cluster([1, 1])
    try:
        yield cluster, nodes[1]
    finally:
        ray.shutdown()
        cluster.shutdown()
        if was_running:
            start_local_ray()


@pytest.mark.heavy  # 21 s: a second Ray node (the node drill is heavy too)
@pytest.mark.ray
def test_two_nodes_train_one_worker_each(smoke_cfg, two_nodes, tmp_path):
    """In CI (the node-loss test below is heavy): spread placement puts the two workers on the
    two nodes, and a short run finishes with both node ids recorded."""
    cluster, second = two_nodes
    cfg = derive(smoke_cfg, {"train.ray_address": cluster.address, "train.placement": "spread",
                            "train.max_steps_per_epoch": 4, "train.epochs": 1})
    _, metrics = fit(cfg, tmp_path / "run", None, None)
    assert metrics["world"] == 2
    assert sorted(metrics["worker_nodes"]) == sorted([cluster.head_node.node_id, second.node_id])


@pytest.mark.ray
@pytest.mark.heavy  # 2.5-4 min here: two Ray starts of the workers, a cluster
def test_two_nodes_then_a_lost_node_resumes_on_the_rest_with_every_row(smoke_cfg, two_nodes,
                                                                       tmp_path):
    cluster, second = two_nodes
    steps = train_readers(smoke_cfg, 0, 2)[0].num_batches
    assert steps == 59  # 30,000 rows, 256 per rank and step on 2 workers
    # Checkpoints at global steps 20, 40, epoch 0's end (59), 60, 80; the drill holds at 90.
    cfg = derive(smoke_cfg, {"train.ray_address": cluster.address, "train.placement": "spread",
                            "train.min_workers": 1, "train.max_failures": 1, "train.epochs": 2,
                            "train.checkpoint_every_steps": 20, "train.node_drill_at_step": 90})
    run_dir = tmp_path / "run"
    marker = run_dir / "node-drill-step-90"
    killed: list[float] = []
    killer = threading.Thread(target=kill_node_at_drill,
                              args=(cluster, second, marker, 2, killed), daemon=True)
    killer.start()
    checkpoint, metrics = fit(cfg, run_dir, None, None)
    killer.join(timeout=1)
    assert killed, "the drill never held every rank, so no node was killed"

    # Until the kill both nodes ran a worker (the drill's markers hold their node ids).
    assert {(marker / f"rank-{r}").read_text() for r in range(2)} == {
        cluster.head_node.node_id, second.node_id}
    # Epoch 1 resumed from the step-80 checkpoint (batch 21 of epoch 1, written by 2 ranks)
    # and was finished by the one worker left, on the head node.
    assert metrics["world"] == 1 and metrics["worker_nodes"] == [cluster.head_node.node_id]
    # No row lost or trained twice: the 2 ranks' first 21 batches of epoch 1 plus what the
    # one rank trained after them make the train split.
    total = 30000
    before = sum(sum(split_evenly(train_readers(smoke_cfg, r, 2)[0].rows_on_rank(), steps)[:21])
                 for r in range(2))
    assert metrics["rows_before_resume"] == before
    assert metrics["rows_trained"] == total - before
    rest_steps = -(-(total - before) // 512)  # one rank: the whole global batch per step
    assert load_progress(checkpoint) == {"epoch": 2, "batch": 0, "global_step": 80 + rest_steps,
                                         "world": 1}


def test_scaling_config_elastic_spread_and_storage(smoke_cfg, tmp_path):
    fixed = scaling_config(smoke_cfg)
    assert fixed.num_workers == 2 and fixed.placement_strategy == "PACK"
    assert not fixed.elasticity_enabled
    cfg = derive(smoke_cfg, {"train.min_workers": 1, "train.placement": "spread",
                            "train.storage_path": "s3://bucket/ckpt/"})
    elastic = scaling_config(cfg)
    assert elastic.num_workers == (1, 2) and elastic.placement_strategy == "SPREAD"
    assert elastic.elasticity_enabled and (elastic.min_workers, elastic.max_workers) == (1, 2)
    # min_workers = num_workers is a fixed group
    assert scaling_config(derive(cfg, {"train.min_workers": 2})).num_workers == 2
