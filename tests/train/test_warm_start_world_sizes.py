"""Warm start on any world size: checkpoints saved on 1, 2 and 3 ranks load into 3, 3 and 2
ranks under other plans (row-, table-, column- and table-row-wise), every tensor equal to the
checkpoint read whole in one process: pooled and sequence (EmbeddingCollection) tables, a
managed table and its id -> row map, fused Adagrad state, the dense part and its Adam state.
Grown and remapped tables on 3 ranks carry the same rows as on 1 (the same-size path). A load
that one rank skips or stalls fails on the others within the time limit, naming it.

Kept cheap: one DIN store of 2,000 rows, tables of at most 200 rows, 3 training steps per
source, and each set of ranks does several warm starts in turn (each overwrites every
tensor)."""

import dataclasses
import json
import re
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.distributed as dist

from pipelines.synthetic.store import generate
from recmtl.config import derive, load_config
from recmtl.errors import CollectiveError
from recmtl.train import warm_start as warm_start_module
from recmtl.train.checkpoint import save_sharded
from recmtl.train.warm_start import read_allowance_s, warm_start
from tests.ranks import run_ranks
from tests.train.test_warm_start import _init, _read_all, _sharded, _train_and_save

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
# item: rows 5 and 6 retired and recycled for new values, 7 moves to 199, 199 is dropped
ITEM_OLD = np.array([i for i in range(200) if i not in (5, 6, 199)], dtype=np.int64)
ITEM_NEW = np.where(ITEM_OLD == 7, 199, ITEM_OLD)
FAULT_TIMEOUT_S = 3


@pytest.fixture(scope="module")
def mixed_cfg(tmp_path_factory):
    """configs/sequences/din.yaml on a tiny store, its user table managed (200 rows for 300
    users): item and category are sequence tables, the rest pooled."""
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


def _warm_each(rank, world, port, cfg, sources, out, sharding):
    """One sharded model warm-started from each of ``sources`` in turn, saved after each."""
    _init(rank, world, port)
    dmp, opt, plan = _sharded(cfg, sharding)
    save_sharded(out / "fresh", dmp, opt)
    for i, source in enumerate(sources):
        report = warm_start(dmp, opt, source)
        save_sharded(out / f"warm{i}", dmp, opt)
        if rank == 0:
            (out / f"report{i}.json").write_text(json.dumps(report))
    if rank == 0:
        (out / "plan.txt").write_text(str(plan))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def carried(mixed_cfg, sources, tmp_path_factory):
    """``{(saved, world): (run directory, i)}``: 1 -> 3 and 2 -> 3 on one set of 3 ranks,
    3 -> 2 on 2 ranks; ``warm<i>`` in the directory is the warm-started checkpoint."""
    root = tmp_path_factory.mktemp("carried")
    run_ranks(_warm_each, 3, mixed_cfg, [sources[1], sources[2]], root / "on3", WARM_PLANS[3])
    run_ranks(_warm_each, 2, mixed_cfg, [sources[3]], root / "on2", WARM_PLANS[2])
    return {(1, 3): (root / "on3", 0), (2, 3): (root / "on3", 1), (3, 2): (root / "on2", 0)}


@pytest.mark.parametrize("saved,world", [(1, 3), (2, 3), (3, 2)])
def test_any_world_size_carries_every_tensor(sources, carried, saved, world):
    """Equal to the checkpoint read whole (what the same-size path loads), under another
    plan on another world size; a row-wise Adagrad state whose column shards changed is
    re-binned: two 4-wide shards merge into their mean, one is copied into both."""
    out, i = carried[saved, world]
    source, warm, fresh = (_read_all(sources[saved]), _read_all(out / f"warm{i}"),
                           _read_all(out / "fresh"))
    assert warm.keys() == source.keys()
    rebinned = set()
    for key, value in source.items():
        if warm[key].shape != value.shape:  # a row-wise state in other column shards
            value = _rebinned(value, warm[key].numel(), source[_weight_of(key)].size(0))
            rebinned.add(key.rsplit(".", 2)[-2])
        assert torch.equal(warm[key], value), key
    assert rebinned == {(1, 3): set(), (2, 3): {"user", "segment"}, (3, 2): {"user"}}[saved, world]
    mapping = next(k for k in source if k.endswith("user._mch_sorted_raw_ids"))
    dense = next(k for k in source if k.endswith("exp_avg_sq"))
    for key in ("model." + ITEM, ITEM_STATE, mapping, dense,
                "model.embeddings.embedding_bags.user.weight"):  # each kind did load
        assert not torch.equal(fresh[key], source[key]), key
    assert (source[mapping] != torch.iinfo(torch.int64).max).sum() > 10  # ids hold rows
    report = json.loads((out / f"report{i}.json").read_text())
    assert {t for t, c in report["tables"].items() if not c["resharded_only"]} == rebinned


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
    """``cfg`` with segment grown 4 -> 6 rows (pooled, two column shards on 1 and 3 ranks)
    and category 10 -> 13 (a sequence table); item (a sequence table) is remapped."""
    tables = [dataclasses.replace(t, num_embeddings={"segment": 6, "category": 13}[t.name])
              if t.name in ("segment", "category") else t for t in cfg.features.tables]
    return derive(cfg, {"features.tables": tables})


def _grown_then_faults(rank, world, port, cfg, source, out, sharding, faults):
    """Warm-starts the grown model, saves it, then once per fault in ``faults`` warm-starts
    again with rank 1 at fault, each rank writing what it got."""
    _init(rank, world, port)
    dmp, opt, _ = _sharded(cfg, sharding)
    save_sharded(out / "fresh", dmp, opt)
    report = warm_start(dmp, opt, source, {"item": (ITEM_OLD, ITEM_NEW)})
    save_sharded(out / "warm", dmp, opt)
    if rank == 0:
        (out / "report.json").write_text(json.dumps(report))
    for fault in faults:
        load = warm_start_module._load
        if rank == 1:
            warm_start_module._load = _faulty(load, fault)
        start, result = time.monotonic(), {"kind": "finished", "message": ""}
        try:
            warm_start(dmp, opt, source, {"item": (ITEM_OLD, ITEM_NEW)},
                       timeout_s=FAULT_TIMEOUT_S)
        except Exception as e:
            result = {"kind": type(e).__name__, "message": str(e)}
        warm_start_module._load = load
        result["seconds"] = time.monotonic() - start
        (out / f"{fault}{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


def _faulty(load, fault):
    """``load`` that skips its second call, its first row copy (a rank on another code path),
    or stalls in it past the limit (a slow or stuck rank)."""
    calls = []

    def faulty(*args):
        calls.append(1)
        if len(calls) == 2:
            if fault == "skips":
                return
            time.sleep(FAULT_TIMEOUT_S + 1)
        load(*args)
    return faulty


@pytest.fixture(scope="module")
def grown_runs(mixed_cfg, sources, tmp_path_factory):
    """Saved on 1 rank, warm-started grown onto 3 ranks (then the faults) and onto 1."""
    root = tmp_path_factory.mktemp("grown")
    for world, plan, faults in ((3, WARM_PLANS[3], ("skips", "stalls")), (1, PLANS[1], ())):
        run_ranks(_grown_then_faults, world, _grown(mixed_cfg), sources[1],
                  root / f"on{world}", plan, faults)
    return root


def test_grown_tables_on_another_world_size_match_the_same_size_path(sources, grown_runs):
    """The surviving rows (weights, and accumulators per column shard) equal the source's on
    3 ranks and on 1, new rows are each run's fresh ones with a zero state, the rest (the
    managed user table and its map, dense) is unchanged."""
    source = _read_all(sources[1])
    runs = {w: (_read_all(grown_runs / f"on{w}" / "warm"), _read_all(grown_runs / f"on{w}"
                                                                      / "fresh")) for w in (3, 1)}
    segment = "model.embeddings.embedding_bags.segment.weight"
    category = "model.sequence_embeddings.embeddings.category.weight"
    states = {key: f"optimizer.state.{key.removeprefix('model.')}.{name}.momentum1"
              for key, name in ((segment, "segment"), (category, "category"),
                                ("model." + ITEM, "item"))}
    for world, (warm, fresh) in runs.items():
        for key, rows, old_rows in ((segment, 6, 4), (category, 13, 10)):
            assert torch.equal(warm[key][:old_rows], source[key]), (world, key)
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
            assert torch.equal(warm[key], source[key]), (world, key)
    (warm3, _), (warm1, _) = runs[3], runs[1]
    for key in states.values():  # the same-size path carries the same state
        assert torch.equal(warm3[key], warm1[key])
    report = json.loads((grown_runs / "on3" / "report.json").read_text())
    assert report["tables"]["segment"] == {"old_rows": 4, "new_rows": 6, "carried": 4,
                                           "fresh": 2, "resharded_only": False}
    assert report["tables"]["item"]["carried"] == 197
    assert report["tables"]["user"]["resharded_only"]


STEP = (r"loading (table|optimizer state '\w+' of table) '\w+' "
        r"\(row copy (?P<copy>\d+) of (?P<copies>\d+)\) (?P<what>.*)")


@pytest.mark.parametrize("fault", ["skips", "stalls"])
def test_a_load_one_rank_misses_fails_within_the_limit_naming_it(sources, grown_runs, fault):
    """Rank 1 skips a load: it finishes early and leaves, and the others fail at once in
    their last load. Rank 1 stalls in a load: the others time out in it after the limit.
    Either way an error naming the load and the rank, never the default 30 minutes."""
    for rank in (0, 2):
        result = json.loads((grown_runs / "on3" / f"{fault}{rank}.json").read_text())
        assert result["kind"] == CollectiveError.__name__, result
        found = re.search(f"warm start from {sources[1]}: {STEP} on rank {rank} of 3",
                          result["message"])
        assert found, result
        if fault == "stalls":  # in the load rank 1 stalls in
            assert found["copy"] == "1", result
            assert found["what"] == f"timed out after {FAULT_TIMEOUT_S} s", result
            assert FAULT_TIMEOUT_S <= result["seconds"] < FAULT_TIMEOUT_S + 10, result
        else:  # in their last load, which rank 1 never issues
            assert found["copy"] == found["copies"], result
            assert found["what"].startswith("failed after"), result
            assert result["seconds"] < 10, result


def test_big_checkpoints_get_time_to_read():
    """The limit grows by a rank's share and the largest tensor at 100 MB/s, whole seconds."""
    def tensor(*size):
        return SimpleNamespace(size=torch.Size(size), properties=SimpleNamespace(
            dtype=torch.float32))
    saved = {"a": tensor(1000, 25_000), "b": tensor(1000, 12_500), "c": SimpleNamespace()}
    assert read_allowance_s(saved, 3) == round((150e6 / 3 + 100e6) / 100e6)  # 1.5 -> 2
    assert read_allowance_s({"a": tensor(200, 8)}, 1) == 0
