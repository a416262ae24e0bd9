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
import re
import time
from datetime import timedelta

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
from recmtl.errors import CollectiveError
from recmtl.losses import multitask_loss
from recmtl.models.builder import build_model
from recmtl.train import sharding as sharding_module
from recmtl.train import warm_start as warm_start_module
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


def _grown(cfg):
    """``cfg`` with segment grown 4 -> 6 rows (pooled, in two column shards on 1 and 3 ranks)
    and category 10 -> 13 (a sequence table); item (a sequence table) is remapped below."""
    tables = [dataclasses.replace(t, num_embeddings={"segment": 6, "category": 13}[t.name])
              if t.name in ("segment", "category") else t for t in cfg.features.tables]
    return derive(cfg, {"features.tables": tables})


# item: rows 5 and 6 retired and recycled for new values, 7 moves to 199, 199 is dropped
ITEM_OLD = np.array([i for i in range(200) if i not in (5, 6, 199)], dtype=np.int64)
ITEM_NEW = np.where(ITEM_OLD == 7, 199, ITEM_OLD)


def test_grown_tables_on_another_world_size_match_the_same_size_path(mixed_cfg, sources,
                                                                    tmp_path):
    """Saved on 1 rank, warm-started with grown and remapped tables onto 3 ranks and onto 1:
    the surviving rows (weights and accumulators, per column shard) equal the source's on
    both, new rows are each run's fresh ones with a zero state, the rest is unchanged."""
    grown, runs = _grown(mixed_cfg), {}
    for world, plan in ((3, WARM_PLANS[3]), (1, PLANS[1])):
        out = tmp_path / f"world{world}"
        out.mkdir()
        run_ranks(_warm, world, grown, sources[1], out, plan, {"item": (ITEM_OLD, ITEM_NEW)},
                  False)
        runs[world] = _read_all(out / "warm"), _read_all(out / "fresh")
    source = _read_all(sources[1])
    segment = "model.embeddings.embedding_bags.segment.weight"
    category = "model.sequence_embeddings.embeddings.category.weight"
    states = {key: f"optimizer.state.{key.removeprefix('model.')}.{name}.momentum1"
              for key, name in ((segment, "segment"), (category, "category"),
                                ("model." + ITEM, "item"))}
    for world, (warm, fresh) in runs.items():
        for key, rows, old_rows in ((segment, 6, 4), (category, 13, 10)):
            assert torch.equal(warm[key][:old_rows], source[key][:old_rows]), (world, key)
            assert torch.equal(warm[key][old_rows:], fresh[key][old_rows:]), (world, key)
            state, old_state = warm[states[key]], source[states[key]]
            blocks = old_state.numel() // old_rows  # one per column shard
            assert torch.equal(state.view(blocks, rows)[:, :old_rows],
                               old_state.view(blocks, old_rows)), (world, key)
            assert torch.all(state.view(blocks, rows)[:, old_rows:] == 0)
        expected_w, expected_m = fresh["model." + ITEM].clone(), fresh[ITEM_STATE].clone()
        expected_w[ITEM_NEW] = source["model." + ITEM][ITEM_OLD]
        expected_m[ITEM_NEW] = source[ITEM_STATE][ITEM_OLD]
        assert torch.equal(warm["model." + ITEM], expected_w), world
        assert torch.equal(warm[ITEM_STATE], expected_m), world
        assert torch.equal(warm[ITEM_STATE][[5, 6]], torch.zeros(2))  # recycled rows restart
        for key in source.keys() - set(states) - set(states.values()):
            assert torch.equal(warm[key], source[key]), (world, key)  # user, its map, dense
    (warm3, _), (warm1, _) = runs[3], runs[1]
    for key in (segment, category):  # the same-size path carries the same rows and state
        rows = source[key].size(0)
        assert torch.equal(warm3[key][:rows], warm1[key][:rows])
    for key in states.values():
        assert torch.equal(warm3[key], warm1[key])
    report = json.loads((tmp_path / "world3" / "report.json").read_text())
    assert report["tables"]["segment"] == {"old_rows": 4, "new_rows": 6, "carried": 4,
                                           "fresh": 2, "resharded_only": False}
    assert report["tables"]["item"]["carried"] == 197
    assert report["tables"]["user"]["resharded_only"]


def _warm_with_a_fault(rank, world, port, cfg, source, out, fault, timeout_s):
    """Rank 1 skips its first row copy (as a rank on another code path would) or stalls
    before it (a slow or stuck rank), then stays alive, taking part in nothing."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=30))
    dmp, opt, _ = _sharded(cfg, WARM_PLANS[3])
    if rank == 1:
        calls, load = [], warm_start_module._load

        def faulty(state, *args):
            calls.append(1)
            if len(calls) == 2:  # call 1 loads the tensors that keep their shape
                if fault == "skips":
                    return
                time.sleep(3 * timeout_s)
            load(state, *args)
        warm_start_module._load = faulty
    start, result = time.monotonic(), {"kind": "finished", "message": ""}
    try:
        warm_start(dmp, opt, source, {"item": (ITEM_OLD, ITEM_NEW)}, timeout_s=timeout_s)
    except Exception as e:
        result = {"kind": type(e).__name__, "message": str(e)}
    result["seconds"] = time.monotonic() - start
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    if rank == 1:
        time.sleep(3 * timeout_s)
    dist.destroy_process_group()


@pytest.mark.parametrize("fault", ["skips", "stalls"])
def test_a_load_one_rank_misses_fails_within_the_limit_naming_it(mixed_cfg, sources, fault,
                                                                 tmp_path):
    """A rank that skips a load leaves the others failing at once (its group is gone when it
    finishes); one that stalls leaves them timing out after the limit (3 s here): either way
    an error naming the load and the rank, never the default group's 30 minutes."""
    start = time.monotonic()
    run_ranks(_warm_with_a_fault, 3, _grown(mixed_cfg), sources[2], tmp_path, fault, 3)
    results = {r: json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(3)}
    step = r"loading (table|optimizer state '\w+' of table) '\w+' \(row copy (\d+) of 8\)"
    for rank in (0, 2):  # they wait for rank 1 in a row copy, and give up
        result = results[rank]
        assert result["kind"] == CollectiveError.__name__, result
        found = re.search(f"warm start from {sources[2]}: {step} (.*) on rank {rank} of 3",
                          result["message"])
        assert found, result
        if fault == "stalls":  # in the load rank 1 never reached
            assert found[2] == "1" and found[3] == "timed out after 3 s", result
            assert 3 <= result["seconds"] < 15, result
        else:  # in their last load, which rank 1 never issues
            assert found[2] == "8" and found[3].startswith("failed after"), result
            assert result["seconds"] < 15, result
    assert time.monotonic() - start < 60
