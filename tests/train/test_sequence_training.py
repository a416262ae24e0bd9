"""Behaviour sequences through training: every architecture trains with DIN (and one with BST)
through the worker loop, two gloo ranks equal the unsharded restore, the candidate and its
history read one table, warm start carries the sequence tables, and (heavy) the
train job ends with a parity-checked bundle."""

from dataclasses import replace

import mlflow
import pyarrow.dataset as ds
import pytest
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from pipelines.jobs.train import train
from pipelines.synthetic.store import generate
from recmtl.config import ARCHITECTURES, derive, load_config
from recmtl.data.reader import ParquetBatchReader
from recmtl.data.schema import FeatureSchema
from recmtl.export.scorer import BundleScorer
from recmtl.losses import multitask_loss
from recmtl.models.builder import build_model
from recmtl.train.checkpoint import load_unsharded, save_sharded
from recmtl.train.job import Tracking, WorkerJob
from recmtl.train.sharding import shard_model
from recmtl.train.warm_start import warm_start
from recmtl.train.worker import run_worker
from tests.conftest import with_output
from tests.ports import free_port

TINY = ["synthetic.train_rows=3000", "synthetic.valid_rows=500", "synthetic.test_rows=500",
        "synthetic.rows_per_file=1500", "synthetic.row_group_size=500", "synthetic.num_users=300",
        "synthetic.num_items=200", "synthetic.num_categories=10", "synthetic.num_segments=4",
        "synthetic.max_history_len=12", "synthetic.mean_history_len=5", "data.batch_size=256"]
ROWS = {"user": 300, "item": 200, "category": 10, "segment": 4}


@pytest.fixture(scope="module")
def seq_cfg(tmp_path_factory):
    """configs/sequences/din.yaml on a tiny sequence store (histories up to 12 ids, cut at 8)."""
    root = tmp_path_factory.mktemp("seq_data")
    cfg = load_config("configs/sequences/din.yaml", [f"data.root={root}", *TINY])
    cfg = _with_sequences(cfg, max_len=8)
    cfg = derive(cfg, {"features.tables": [
        replace(t, num_embeddings=ROWS.get(t.name, t.num_embeddings))
        for t in cfg.features.tables]})
    generate(cfg)
    return cfg


def _with_sequences(cfg, **changes):
    """The config with ``changes`` to every sequence's settings."""
    return derive(cfg, {"features.sparse": [
        replace(f, sequence=replace(f.sequence, **changes)) if f.sequence else f
        for f in cfg.features.sparse]})


@pytest.fixture
def one_rank_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("arch,encoder", [(a, "din") for a in ARCHITECTURES] + [("mmoe", "bst")])
def test_worker_loop_trains_each_architecture_with_sequences(arch, encoder, seq_cfg, tmp_path,
                                                             one_rank_group):
    # With dot: dtrn pairs per task, infnet pairs all but the histories' items.
    cfg = derive(seq_cfg, {"model.arch": arch, "train.max_steps_per_epoch": 6,
                          "train.log_every": 3, "model.interaction": "dot"})
    cfg = _with_sequences(cfg, encoder=encoder)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.tracking.MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("s")).info.run_id
    run_worker(WorkerJob(cfg, tracking=Tracking(uri, run_id), checkpoint_root=str(tmp_path / "c")))
    losses = [m.value for m in client.get_metric_history(run_id, "train/loss_ctr")]
    assert len(losses) == 2 and all(0 < v < 5 for v in losses)
    restored = load_unsharded(cfg, tmp_path / "c" / "epoch-0000")
    fresh = dict(build_model(cfg).named_parameters())
    changed = {n for n, p in restored.named_parameters() if not torch.equal(p, fresh[n])}
    # The unpooled tables (fused optimizer) and both attention units moved.
    assert {"sequence_embeddings.embeddings.item.weight",
            "sequence_embeddings.embeddings.category.weight"} <= changed
    moved = ("dense_ranker.backbone.item_maps" if arch == "infnet"  # the items are its tokens
             else "sequence_features.encoders.hist_items")
    assert any(n.startswith(moved) for n in changed)
    assert any(n.startswith("embeddings.embedding_bags.user") for n in changed)


def _reader(cfg, rank, world):
    return ParquetBatchReader(f"{cfg.data.root}/train", FeatureSchema.from_config(cfg), 128,
                              rank, world)


def _worker(rank, world, port, cfg, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    dmp, opt, plan = shard_model(build_model(cfg, embedding_device="meta"), cfg.train,
                                 torch.device("cpu"), {"item": ["column_wise"]})
    for _, batch in zip(range(3), _reader(cfg, rank, world).epoch(0), strict=False):
        loss, _ = multitask_loss(dmp(batch.dense, batch.sparse), batch.labels, cfg.tasks)
        opt.zero_grad()
        loss.backward()
        opt.step()
    probe = next(iter(_reader(cfg, rank, world).epoch(0)))
    dmp.eval()
    with torch.no_grad():
        logits = dmp(probe.dense, probe.sparse)
    torch.save({k: v.clone() for k, v in logits.items()}, f"{out}/logits{rank}.pt")
    torch.save(str(plan), f"{out}/plan{rank}.pt")
    save_sharded(f"{out}/ckpt", dmp, opt)
    dist.destroy_process_group()



def test_sharded_sequence_model_equals_unsharded_restore(seq_cfg, tmp_path):
    """The EmbeddingCollection's tables sharded over two ranks (item column-wise, category
    table-wise), trained 3 steps: each rank's logits equal the restored unsharded model's."""
    mp.spawn(_worker, args=(2, free_port(), seq_cfg, str(tmp_path)), nprocs=2)
    plan = torch.load(tmp_path / "plan0.pt")
    assert "sequence_embeddings" in plan and "column_wise" in plan
    model = load_unsharded(seq_cfg, tmp_path / "ckpt")
    fresh = dict(build_model(seq_cfg).named_parameters())
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, fresh[n])}
    assert "sequence_embeddings.embeddings.item.weight" in moved
    for rank in range(2):
        probe = next(iter(_reader(seq_cfg, rank, 2).epoch(0)))
        expected = torch.load(tmp_path / f"logits{rank}.pt")
        with torch.no_grad():
            actual = model(probe.dense, probe.sparse)
        for task, value in expected.items():
            torch.testing.assert_close(actual[task], value, rtol=0, atol=1e-5)


def test_candidate_and_history_read_the_same_rows(seq_cfg):
    """Row 0's history holds its candidate (id 5) last: both get table row 5, exactly."""
    model = build_model(seq_cfg)
    names = [f.name for f in seq_cfg.features.sparse]
    ids = {"user_id": [[1], [2]], "item_id": [[5], [7]], "item_category": [[1], [2]],
           "hist_items": [[3, 5], []], "hist_categories": [[1, 2], []],
           "hist_age_bucket": [[4, 1], []],
           "user_segment": [[0], [1]], "hour": [[3], [4]], "device": [[0], [1]]}
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=names, values=torch.tensor([i for n in names for row in ids[n] for i in row]),
        lengths=torch.tensor([len(row) for n in names for row in ids[n]]))
    jagged = model.sequence_embeddings(kjt)
    table = model.sequence_embeddings.embeddings["item"].weight
    assert torch.equal(jagged["hist_items"].values()[1], jagged["item_id"].values()[0])
    assert torch.equal(jagged["item_id"].values()[0], table[5])
    assert jagged["hist_items"].lengths().tolist() == [2, 0]
    blocks = model.sequence_features(jagged)
    assert torch.equal(blocks["hist_items"][1], torch.zeros(table.shape[1]))  # empty history
    assert torch.isfinite(model(torch.zeros(2, 2), kjt)["ctr"]).all()


def test_warm_start_carries_sequence_tables(seq_cfg, tmp_path):
    """In one process: the sequence tables of a saved model load into a fresh one, and a grown
    one keeps its rows (the sharded paths: tests/train/test_warm_start.py)."""
    saved = build_model(seq_cfg)
    with torch.no_grad():
        for p in saved.parameters():
            p.add_(1.0)
    dcp.save({"model": saved.state_dict(),
              "optimizer": torch.optim.SGD(saved.parameters(), lr=0.1).state_dict()},
             checkpoint_id=str(tmp_path), no_dist=True)
    grown = derive(seq_cfg, {"features.tables": [
        replace(t, num_embeddings=12) if t.name == "category" else t
        for t in seq_cfg.features.tables]})
    model = build_model(grown)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    report = warm_start(model, torch.optim.SGD(model.parameters(), lr=0.1), tmp_path)
    before, after = saved.state_dict(), model.state_dict()
    item, category = ("sequence_embeddings.embeddings.item.weight",
                      "sequence_embeddings.embeddings.category.weight")
    assert torch.equal(after[item], before[item])
    assert torch.equal(after[category][:10], before[category])
    assert torch.equal(after[category][10:], initial[category][10:])  # new rows: fresh
    assert report["tables"]["category"]["carried"] == 10


@pytest.mark.heavy
@pytest.mark.ray
def test_train_job_exports_a_sequence_model(seq_cfg, ray_local, tmp_path):
    """`recmtl train` on the DIN config ends with its bundle, parity-checked on held-out rows
    on both backends, and an MLflow model that scores rows with list columns."""
    cfg = derive(with_output(seq_cfg, tmp_path), {"train.max_steps_per_epoch": 6})
    summary = train(cfg)
    assert summary["export"] is not None and summary["model_uri"] is not None
    assert set(summary["parity_max_abs_diff"]) == {"torch", "onnx"}
    assert all(max(d.values()) <= 1e-5 for d in summary["parity_max_abs_diff"].values())
    model = mlflow.pyfunc.load_model(summary["model_uri"])
    rows = ds.dataset(f"{cfg.data.root}/test", format="parquet").head(20)
    assert "hist_items" in model.metadata.get_input_schema().input_names()
    scores = model.predict(rows.to_pandas())
    bundle = BundleScorer(summary["export"]).score_rows(rows)
    torch.testing.assert_close(torch.from_numpy(scores["score_ctr"].to_numpy()), bundle["ctr"],
                               rtol=0, atol=1e-6)
