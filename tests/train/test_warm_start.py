"""Warm start: a checkpoint saved on N ranks loads into M ranks (1 -> 3, 2 -> 1, 2 -> 3,
3 -> 2) under other sharding plans (row-, table-, column- and table-row-wise) with every
weight and optimizer state unchanged: pooled and sequence tables, a managed table's id -> row
map, the dense part and its Adam state. A grown or remapped table keeps its surviving rows bit
for bit (weights and Adagrad accumulators) on any world size, its new rows start fresh, and a
load one rank never reaches fails on the others within the time limit, naming the load.

The ranks run in processes forked from a fork server (``tests.ranks``); the checkpoints are
read back whole in this process alone (``no_dist``), the independent reference."""

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader
from torchrec.distributed.planner import ParameterConstraints

from pipelines.synthetic.store import generate
from recmtl.config import derive, load_config
from recmtl.data.reader import ParquetBatchReader
from recmtl.data.schema import FeatureSchema
from recmtl.losses import multitask_loss
from recmtl.models.builder import build_model
from recmtl.train import sharding as sharding_module
from recmtl.train.checkpoint import save_sharded
from recmtl.train.managed import Admission
from recmtl.train.sharding import shard_model
from recmtl.train.warm_start import warm_start
from tests.ranks import run_ranks


def _init(rank, world, port):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)


def _narrow_columns(sharding_types):
    """A table asked to be column-wise goes in 4-wide shards (torchrec's are at least 128
    wide by default: one shard of an 8-wide table)."""
    narrow = sharding_types == ["column_wise"]
    return ParameterConstraints(sharding_types=sharding_types, min_partition=4 if narrow else None)


def _sharded(cfg, sharding):
    sharding_module.ParameterConstraints = _narrow_columns  # in the rank processes only
    return shard_model(build_model(cfg, embedding_device="meta"), cfg.train, torch.device("cpu"),
                       sharding, tables=cfg.features.tables)


def _steps(cfg, dmp, opt, rank, world, n):
    reader = ParquetBatchReader(f"{cfg.data.root}/train", FeatureSchema.from_config(cfg), 256,
                                rank, world)
    managed = dmp.module.managed_ids
    admit = Admission(managed, dmp, opt, cfg.seed) if managed is not None else None
    for _, batch in zip(range(n), reader.epoch(0), strict=False):
        if admit is not None:
            admit(batch.sparse)
        loss, _ = multitask_loss(dmp(batch.dense, batch.sparse), batch.labels, cfg.tasks)
        opt.zero_grad()
        loss.backward()
        opt.step()


def _train_and_save(rank, world, port, cfg, out, sharding):
    _init(rank, world, port)
    dmp, opt, plan = _sharded(cfg, sharding)
    _steps(cfg, dmp, opt, rank, world, 3)
    save_sharded(out, dmp, opt)
    if rank == 0:
        (out / "plan.txt").write_text(str(plan))
    dist.destroy_process_group()


def _warm(rank, world, port, cfg, source, out, sharding, remaps, train_on=True):
    _init(rank, world, port)
    dmp, opt, plan = _sharded(cfg, sharding)
    save_sharded(f"{out}/fresh", dmp, opt)
    report = warm_start(dmp, opt, source, remaps)
    save_sharded(f"{out}/warm", dmp, opt)
    if rank == 0:
        (out / "report.json").write_text(json.dumps(report))
        (out / "plan.txt").write_text(str(plan))
    if train_on:
        _steps(cfg, dmp, opt, rank, world, 1)  # and it trains on
    dist.destroy_process_group()


def _read_all(path):
    """Every tensor of a checkpoint, whole, read in this process alone."""
    meta = FileSystemReader(str(path)).read_metadata().state_dict_metadata
    flat = {k: torch.empty(v.size, dtype=v.properties.dtype) for k, v in meta.items()
            if hasattr(v, "size")}
    nested = {"model": {}, "optimizer": {"state": {}}}
    for k, t in flat.items():
        if k.startswith("model."):
            nested["model"][k.removeprefix("model.")] = t
        else:
            param, _, name = k.removeprefix("optimizer.state.").rpartition(".")
            if ".weight." in k:  # fused table state: "<param>.weight.<table>.<state>"
                param, name = k.removeprefix("optimizer.state.").split(".weight.", 1)
                param += ".weight"
            nested["optimizer"]["state"].setdefault(param, {})[name] = t
    dcp.load(nested, checkpoint_id=str(path), no_dist=True)
    return flat


SAVE_PLAN = {"user": ["row_wise"], "item": ["table_wise"]}


@pytest.fixture(scope="module")
def smoke_source(smoke_cfg, tmp_path_factory):
    """configs/smoke.yaml trained 3 steps on 2 ranks (user row-wise, item table-wise)."""
    path = tmp_path_factory.mktemp("smoke_source") / "source"
    run_ranks(_train_and_save, 2, smoke_cfg, path, SAVE_PLAN)
    return path


def test_warm_start_reshards_two_ranks_into_one_and_three(smoke_cfg, smoke_source, tmp_path):
    source = _read_all(smoke_source)
    assert source["model.embeddings.embedding_bags.user.weight"].abs().sum() > 0
    for world, plan in ((1, None), (3, {"user": ["table_wise"], "item": ["row_wise"]})):
        out = tmp_path / f"world{world}"
        out.mkdir()
        run_ranks(_warm, world, smoke_cfg, smoke_source, out, plan, None)
        warm, fresh = _read_all(out / "warm"), _read_all(out / "fresh")
        assert warm.keys() == source.keys()
        for key, value in source.items():
            assert torch.equal(warm[key], value), (world, key)
        moved = [k for k in source if k.endswith("momentum1") or ".weight" in k and "model." in k]
        assert any(not torch.equal(fresh[k], source[k]) for k in moved)  # it did load something
        report = json.loads((out / "report.json").read_text())
        assert all(t["resharded_only"] for t in report["tables"].values())


def test_grown_and_remapped_tables_keep_surviving_rows(smoke_cfg, smoke_source, tmp_path):
    tables = [dataclasses.replace(t, num_embeddings=2600) if t.name == "user" else t
              for t in smoke_cfg.features.tables]
    grown = derive(smoke_cfg, {"features.tables": tables})
    # item: rows 5 and 6 retired and recycled for new values, 7 moves to 999, 999 is dropped
    item_old = np.array([i for i in range(1000) if i not in (5, 6, 999)], dtype=np.int64)
    item_new = np.where(item_old == 7, 999, item_old)
    out = tmp_path / "grown"
    out.mkdir()
    run_ranks(_warm, 2, grown, smoke_source, out, {"user": ["table_wise"]},
              {"item": (item_old, item_new)})
    source, warm, fresh = (_read_all(smoke_source), _read_all(out / "warm"),
                           _read_all(out / "fresh"))
    user_w, user_m = "model.embeddings.embedding_bags.user.weight", \
        "optimizer.state.embeddings.embedding_bags.user.weight.user.momentum1"
    assert warm[user_w].shape == (2600, 8) and warm[user_m].shape == (2600,)
    assert torch.equal(warm[user_w][:2000], source[user_w])  # bit-identical survivors
    assert torch.equal(warm[user_m][:2000], source[user_m])
    assert torch.equal(warm[user_w][2000:], fresh[user_w][2000:])  # new rows: today's init
    assert torch.equal(warm[user_m][2000:], torch.zeros(600))
    item_w, item_m = "model.embeddings.embedding_bags.item.weight", \
        "optimizer.state.embeddings.embedding_bags.item.weight.item.momentum1"
    expected_w, expected_m = fresh[item_w].clone(), fresh[item_m].clone()
    expected_w[item_new], expected_m[item_new] = source[item_w][item_old], source[item_m][item_old]
    assert torch.equal(warm[item_w], expected_w) and torch.equal(warm[item_m], expected_m)
    assert torch.equal(warm[item_m][[5, 6]], torch.zeros(2))  # recycled rows start over
    assert not torch.equal(warm[item_w][7], source[item_w][7])  # row 7 moved to 999
    for key in source:  # the dense part and its Adam state carry over unchanged
        if "embedding_bags" not in key:
            assert torch.equal(warm[key], source[key]), key
    report = json.loads((out / "report.json").read_text())
    assert report["tables"]["user"] == {"old_rows": 2000, "new_rows": 2600, "carried": 2000,
                                        "fresh": 600, "resharded_only": False}
    assert report["tables"]["item"]["carried"] == 997


# Any world size: a tiny DIN store (the item and category tables are sequence tables, an
# EmbeddingCollection) whose user table is managed (200 rows for 300 users).
TINY_SEQUENCES = ["synthetic.train_rows=2000", "synthetic.valid_rows=200",
                  "synthetic.test_rows=200", "synthetic.rows_per_file=1000",
                  "synthetic.row_group_size=500", "synthetic.num_users=300",
                  "synthetic.num_items=200", "synthetic.num_categories=10",
                  "synthetic.num_segments=4", "synthetic.max_history_len=8",
                  "synthetic.mean_history_len=4", "data.batch_size=256", "train.pipeline=none"]
SIZES = {"user": 200, "item": 200, "category": 10, "segment": 4}
# Each world size's own plan: a warm start changes the plan too. Column-wise: two 4-wide
# shards, pooled tables only (torchrec's sequence tables take one width, and on CPU table-,
# row- or column-wise only).
PLANS = {
    1: {"user": ["row_wise"], "item": ["table_wise"], "category": ["table_wise"],
        "segment": ["column_wise"]},
    2: {"user": ["column_wise"], "item": ["row_wise"], "category": ["row_wise"],
        "segment": ["table_row_wise"]},
    3: {"user": ["table_wise"], "item": ["row_wise"], "category": ["table_wise"],
        "segment": ["table_wise"]},
}
WARM_PLANS = {
    2: {"user": ["column_wise"], "item": ["table_wise"], "category": ["row_wise"],
        "segment": ["table_row_wise"]},
    3: {"user": ["row_wise"], "item": ["table_wise"], "category": ["row_wise"],
        "segment": ["column_wise"]},
}
ITEM = "sequence_embeddings.embeddings.item.weight"
ITEM_STATE = f"optimizer.state.{ITEM}.item.momentum1"


@pytest.fixture(scope="module")
def mixed_cfg(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed_data")
    cfg = load_config("configs/sequences/din.yaml", [f"data.root={root}", *TINY_SEQUENCES])
    tables = [t | {"num_embeddings": SIZES.get(t["name"], t["num_embeddings"])}
              for t in cfg.to_dict()["features"]["tables"]]
    tables = [t | {"managed_collision": {"eviction": "lfu", "eviction_interval": 2}}
              if t["name"] == "user" else t for t in tables]
    cfg = derive(cfg, {"features.tables": tables, "features.sparse": [
        dataclasses.replace(f, sequence=dataclasses.replace(f.sequence, max_len=8))
        if f.sequence else f for f in cfg.features.sparse]})
    generate(cfg)
    return cfg


@pytest.fixture(scope="module")
def sources(mixed_cfg, tmp_path_factory):
    """``{world: checkpoint}``: mixed_cfg trained 3 steps on 1, 2 and 3 ranks."""
    root = tmp_path_factory.mktemp("sources")
    for world, plan in PLANS.items():
        run_ranks(_train_and_save, world, mixed_cfg, root / f"saved{world}", plan)
    return {world: root / f"saved{world}" for world in PLANS}


@pytest.mark.parametrize("saved,world", [(1, 3), (2, 3), (3, 2)])
def test_any_world_size_carries_every_tensor(mixed_cfg, sources, saved, world, tmp_path):
    """Pooled and sequence tables, the managed user table and its id -> row map, the dense
    part and every optimizer state: equal to the checkpoint read whole, as the same-size path
    loads it, under another plan on another world size."""
    run_ranks(_warm, world, mixed_cfg, sources[saved], tmp_path, WARM_PLANS[world], None, False)
    source, warm, fresh = (_read_all(sources[saved]), _read_all(tmp_path / "warm"),
                           _read_all(tmp_path / "fresh"))
    assert warm.keys() == source.keys()
    rebinned = set()
    for key, value in source.items():
        if warm[key].shape != value.shape:  # a row-wise state in other column shards
            value = _rebinned(value, warm[key].numel(), source[_weight_of(key)].size(0))
            rebinned.add(key.rsplit(".", 2)[-2])
        assert torch.equal(warm[key], value), key
    assert rebinned == {(1, 3): set(), (2, 3): {"user", "segment"}, (3, 2): {"user"}}[saved, world]
    mapping = next(k for k in source if k.endswith("user._mch_sorted_raw_ids"))
    user = "model.embeddings.embedding_bags.user.weight"
    dense = next(k for k in source if k.endswith("exp_avg_sq") and "dense" in k)
    for key in (ITEM, ITEM_STATE, mapping, user, dense):  # each kind did load
        key = key if key.startswith(("model.", "optimizer.")) else f"model.{key}"
        assert not torch.equal(fresh[key], source[key]), key
    assert (source[mapping] != torch.iinfo(torch.int64).max).sum() > 10  # ids hold rows
    plans = (sources[saved] / "plan.txt").read_text(), (tmp_path / "plan.txt").read_text()
    assert "column_wise" in plans[0] + plans[1] and "row_wise" in plans[0] + plans[1]


def _weight_of(state_key):
    """``optimizer.state.<param>.<table>.<state>`` -> ``model.<param>``."""
    return "model." + state_key.removeprefix("optimizer.state.").split(".weight.")[0] + ".weight"


def _rebinned(values, size, rows):
    """A row-wise state (one value per row and 4-wide column shard) for ``size // rows``
    shards: two merge into their mean, one is copied into both."""
    if size == rows:
        return values.view(-1, rows).mean(0)
    return values.repeat(size // rows)
