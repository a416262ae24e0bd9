"""Warm start on the smoke store: a checkpoint saved on 2 ranks loads into 1 and 3 ranks
under other sharding plans with every weight and optimizer state unchanged; a grown or
remapped table keeps its surviving rows bit for bit (weights and Adagrad accumulators), and
its new rows start fresh. Other world sizes, sequence and managed tables, and faults:
``test_warm_start_world_sizes.py``.

The ranks run in processes forked from a fork server (``tests.ranks``); the checkpoints are
read back whole in this process alone (``no_dist``), the independent reference."""

import dataclasses
import json
from datetime import timedelta

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader
from torchrec.distributed.planner import ParameterConstraints

from recmtl.config import derive
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
    # 30 s, not 30 minutes: a collective left waiting outside the warm start fails the test.
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=30))


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


def _warm(rank, world, port, cfg, source, out, sharding, remaps):
    _init(rank, world, port)
    dmp, opt, plan = _sharded(cfg, sharding)
    save_sharded(f"{out}/fresh", dmp, opt)
    report = warm_start(dmp, opt, source, remaps)
    save_sharded(f"{out}/warm", dmp, opt)
    if rank == 0:
        (out / "report.json").write_text(json.dumps(report))
        (out / "plan.txt").write_text(str(plan))
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
