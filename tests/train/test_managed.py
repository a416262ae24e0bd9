"""Managed-collision tables: ids admitted by frequency, unseen ids on the shared last row, the
same mapping on every rank (each records the global step's ids), the rows new ids take
re-initialised (weights and optimizer state) and nothing else touched, and the worker loop
training a managed table end to end."""


import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torchrec.modules.mc_modules import LFU_EvictionPolicy, MCHManagedCollisionModule
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recmtl.config import derive
from recmtl.data.reader import ParquetBatchReader
from recmtl.data.schema import FeatureSchema
from recmtl.export.inputs import BundleError, lookup_rows, rows_to_inputs
from recmtl.export.scorer import BundleScorer
from recmtl.losses import multitask_loss
from recmtl.models.builder import build_model
from recmtl.modules.managed_ids import ManagedIds
from recmtl.train.checkpoint import load_unsharded
from recmtl.train.managed import all_gather_cat, reset_rows
from recmtl.train.sharding import shard_model
from tests.ports import free_port


def _managed(rows=6, interval=1):
    mch = MCHManagedCollisionModule(zch_size=rows, device=torch.device("cpu"),
                                    eviction_policy=LFU_EvictionPolicy(),
                                    eviction_interval=interval)
    return ManagedIds({"t": mch}, {"a": "t"}).train()


def _kjt(a, b):
    """Features ``a`` (managed) and ``b`` (plain), one id per row."""
    return KeyedJaggedTensor(keys=["a", "b"], values=torch.tensor(a + b),
                             lengths=torch.ones(len(a) + len(b), dtype=torch.int32))


def _map(managed, ids):
    return managed(_kjt(ids, [0] * len(ids))).values()[:len(ids)].tolist()


def test_frequent_ids_take_rows_and_the_rest_share_the_last_row():
    managed = _managed(rows=4)  # rows 0..2 for ids, row 3 shared
    stream = [11] * 5 + [22] * 4 + [33] * 3 + [44] * 1 + [55] * 2
    managed.admit(_kjt(stream, [9] * len(stream)))
    rows = _map(managed, [11, 22, 33, 55, 44, 99])
    assert sorted(rows[:3]) == [0, 1, 2]  # the three most frequent own distinct rows
    assert rows[3:] == [3, 3, 3]  # the rest (and an id never seen) read the shared row
    out = managed(_kjt([11, 99], [7, 8]))
    assert out.values()[2:].tolist() == [7, 8]  # a plain feature passes through
    sorted_ids, held = managed.mapping("t")
    assert sorted_ids.tolist() == [11, 22, 33]
    assert lookup_rows(torch.tensor([33, 44, 11]), sorted_ids, held, 3).tolist() == \
        [rows[2], 3, rows[0]]


def test_a_full_table_evicts_the_least_frequent_and_reports_the_rows_it_gave():
    managed = _managed(rows=4)
    managed.admit(_kjt([1, 1, 1, 2, 2, 3], [0] * 6))
    before = dict(zip([1, 2, 3], _map(managed, [1, 2, 3]), strict=True))
    taken = managed.admit(_kjt([4] * 9 + [5] * 9, [0] * 18))
    after = dict(zip([1, 4, 5], _map(managed, [1, 4, 5]), strict=True))
    assert after[1] == before[1]  # the most frequent survivor keeps its row
    assert _map(managed, [2, 3]) == [3, 3]  # the two least frequent lost theirs
    assert sorted(taken["t"].tolist()) == sorted([before[2], before[3]])
    assert {after[4], after[5]} == {before[2], before[3]}  # and the newcomers took them


def test_the_history_grows_instead_of_dropping_ids():
    managed = _managed(rows=50, interval=3)
    managed.admit(_kjt([1, 2], [0, 0]))  # torchrec sizes its history from this first step
    managed.admit(_kjt(list(range(10, 40)), [0] * 30))
    managed.admit(_kjt([40], [0]))
    assert managed.mapping("t")[0].tolist() == [1, 2, *range(10, 41)]


def _two_rank_admission(rank, world, port, steps, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    managed = _managed(rows=12, interval=2)
    for ids in steps[rank]:
        managed.admit(_kjt(ids, [0] * len(ids)), all_gather_cat)
    sorted_ids, rows = managed.mapping("t")
    torch.save((sorted_ids, rows), out / f"rank{rank}.pt")
    dist.destroy_process_group()



def test_every_rank_holds_the_mapping_of_the_global_stream(tmp_path):
    rng = np.random.default_rng(0)
    zipf = lambda n: (rng.zipf(1.5, size=n) % 40).tolist()  # noqa: E731
    steps = [[zipf(7) for _ in range(6)], [zipf(int(rng.integers(1, 12))) for _ in range(6)]]
    mp.spawn(_two_rank_admission, args=(2, free_port(), steps, tmp_path), nprocs=2)
    one, two = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    single = _managed(rows=12, interval=2)
    for a, b in zip(*steps, strict=True):
        single.admit(_kjt(a + b, [0] * (len(a) + len(b))))
    reference = single.mapping("t")
    for got in (one, two):
        assert torch.equal(got[0], reference[0]) and torch.equal(got[1], reference[1])


@pytest.fixture
def one_rank(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _managed_cfg(cfg, rows=500, interval=2):
    """``cfg`` with its user table managed (fewer rows than users: evictions happen)."""
    tables = [t if t["name"] != "user" else t | {
        "num_embeddings": rows, "managed_collision": {"eviction": "lfu",
                                                      "eviction_interval": interval}}
        for t in cfg.to_dict()["features"]["tables"]]
    return derive(cfg, {"features.tables": tables, "train.pipeline": "none"})


def _local_rows(dmp, optimizer, table):
    from recmtl.train.warm_start import _local, row_tensors

    state = {"model": dmp.state_dict(), "optimizer": optimizer.state_dict()}
    return {flat: _local(live).clone() for flat, live in row_tensors(state, table)}


def test_reset_rows_renews_exactly_those_rows(smoke_cfg, one_rank):
    cfg = _managed_cfg(smoke_cfg)
    dmp, optimizer, _ = shard_model(build_model(cfg, embedding_device="meta"), cfg.train,
                                    torch.device("cpu"), {"user": ["table_wise"]},
                                    tables=cfg.features.tables)
    reader = ParquetBatchReader(f"{cfg.data.root}/train", FeatureSchema.from_config(cfg), 256,
                                0, 1)
    for _, batch in zip(range(4), reader.epoch(0), strict=False):
        dmp.module.managed_ids.admit(batch.sparse)  # rows it gives are trained from here on
        loss, _ = multitask_loss(dmp(batch.dense, batch.sparse), batch.labels, cfg.tasks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    before = _local_rows(dmp, optimizer, "user")
    momentum = next(k for k in before if not k.startswith("model."))
    trained = torch.nonzero(before[momentum].reshape(500, -1).sum(1) > 0).flatten()
    assert trained.numel() > 3
    rows = trained[torch.tensor([0, trained.numel() // 2, -1])]
    reset_rows(dmp, optimizer, {"user": rows}, seed=7)
    after = _local_rows(dmp, optimizer, "user")
    untouched = torch.ones(500, dtype=torch.bool)
    untouched[rows] = False
    weight = "model.embeddings.embedding_bags.user.weight"
    for key in (weight, momentum):
        assert torch.equal(after[key][untouched], before[key][untouched])
    assert not torch.equal(after[weight][rows], before[weight][rows])
    assert after[weight][rows].abs().max() <= (1 / 500) ** 0.5
    assert torch.all(after[momentum][rows] == 0)
    reset_rows(dmp, optimizer, {"user": rows}, seed=7)  # the same seed draws the same rows
    assert torch.equal(_local_rows(dmp, optimizer, "user")[weight], after[weight])


def test_worker_loop_trains_and_exports_a_managed_table(smoke_cfg, tmp_path, one_rank):
    from pipelines.jobs.export import export
    from recmtl.train.job import WorkerJob
    from recmtl.train.worker import run_worker, train_readers

    cfg = derive(_managed_cfg(smoke_cfg), {"train.max_steps_per_epoch": 12})
    run_worker(WorkerJob(cfg, checkpoint_root=str(tmp_path / "ckpt")))
    model = load_unsharded(cfg, tmp_path / "ckpt" / "epoch-0000")
    assert model.managed_ids is not None
    sorted_ids, rows = model.managed_ids.mapping("user")
    reader = train_readers(cfg, 0, 1)[0]
    users = np.unique(np.concatenate([b.sparse["user_id"].values().numpy() for _, b in zip(
        range(12), reader.epoch(0), strict=False)]))
    # Admitted ids are ids the job saw, each on its own row below the shared one.
    assert 0 < sorted_ids.numel() <= 499
    assert set(sorted_ids.tolist()) <= set(users.tolist())
    assert len(set(rows.tolist())) == rows.numel() and int(rows.max()) < 499

    # A warm start carries the mapping (the ids keep their rows).
    from recmtl.train.warm_start import warm_start

    dmp, optimizer, _ = shard_model(build_model(cfg, embedding_device="meta"), cfg.train,
                                    torch.device("cpu"), tables=cfg.features.tables)
    assert dmp.module.managed_ids.mapping("user")[0].numel() == 0
    warm_start(dmp, optimizer, tmp_path / "ckpt" / "epoch-0000")
    warm_ids, warm_rows = dmp.module.managed_ids.mapping("user")
    assert torch.equal(warm_ids, sorted_ids) and torch.equal(warm_rows, rows)

    # The bundle maps raw ids like the model: admitted ids to their rows, the rest to the last.
    result = export(cfg, tmp_path / "ckpt" / "epoch-0000", tmp_path / "bundle")
    user = next(f for f in result["manifest"]["sparse_features"] if f["name"] == "user_id")
    assert user["id_transform"] == {"kind": "managed_collision", "num_embeddings": 500,
                                    "mapping": "managed/user.safetensors", "default_row": 499}
    test = ds.dataset(f"{cfg.data.root}/test").to_table()
    seen = np.isin(test.column("user_id").to_numpy(), sorted_ids.numpy())
    assert seen.any() and not seen.all()  # both kinds of id were scored in the parity check
    scorer = BundleScorer(tmp_path / "bundle")
    model.eval()
    rows = test.slice(0, 300)
    ids, dense = rows_to_inputs(rows, scorer.manifest)
    expected = torch.sigmoid(model(dense, _to_kjt(ids))["ctr"])
    assert torch.allclose(scorer.score_rows(rows)["ctr"], expected, atol=1e-5)
    bad = rows.set_column(rows.schema.get_field_index("user_id"), "user_id",
                          pa.array([-5] * rows.num_rows, pa.int64()))
    with pytest.raises(BundleError, match="user_id.*outside"):
        scorer.score_rows(bad)


def _to_kjt(ids):
    keys = list(ids)
    values = torch.cat([ids[k][0] for k in keys])
    lengths = torch.cat([torch.diff(ids[k][1]) for k in keys]).int()
    return KeyedJaggedTensor(keys=keys, values=values, lengths=lengths)
