"""OOV dropout trains the row new ids read: on a preparation whose vocabularies hold every train
value (min_count 1), training without it never moves row 0 of a vocabulary table; with it,
row 0 moves, while the validation batches keep their ids and the report gets the new-id slice.
One gloo rank in this process, a few steps on 251 rows."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.distributed as dist

from pipelines.jobs.evaluate import evaluate
from recmtl.config import load_config
from recmtl.train.job import WorkerJob
from recmtl.train.worker import WorkerRun
from tests.raw_export import prepare_vocab_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return prepare_vocab_store(tmp_path_factory.mktemp("oov"))


@pytest.fixture
def one_rank_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _tables(model):
    """``{table: full weight}`` of the sharded model on this one rank (a copy)."""
    out = {}
    for name, t in model.state_dict().items():
        if name.endswith(".weight") and ".embedding_bags." in name:
            full = torch.zeros(t.size())
            for shard in t.local_shards():
                (r, c), (h, w) = shard.metadata.shard_offsets, shard.metadata.shard_sizes
                full[r:r + h, c:c + w] = shard.tensor
            out[name.split(".")[-2]] = full
    return out


def _train(store, tmp_path, rate):
    """One epoch; returns the config, the checkpoint, the tables before and after, and the
    item ids each lookup saw, by whether the model was training."""
    cfg = load_config(store / "shop.yaml", [
        "data.batch_size=32", "data.eval_batch_size=64", f"train.oov_dropout.rate={rate}",
        "train.oov_dropout.max_count=1000", "evaluate.bootstrap=0"])
    run = WorkerRun(WorkerJob(cfg, checkpoint_root=str(tmp_path / "ckpt")))
    seen: dict[bool, list[np.ndarray]] = {True: [], False: []}

    def record(module, args, kwargs):
        sparse = args[0] if args else kwargs["features"]
        seen[module.training].append(sparse["item_id"].values().numpy().copy())

    run.model.module.embeddings.register_forward_pre_hook(record, with_kwargs=True)
    before = _tables(run.model)
    try:
        run.train_epoch(0)
    finally:
        run.progress.close()
    moved = {k: (w != before[k]).any(dim=1) for k, w in _tables(run.model).items()}
    return cfg, tmp_path / "ckpt" / "epoch-0000", moved, {
        k: np.concatenate(v) for k, v in seen.items()}


def test_without_dropout_the_oov_row_never_trains(store, tmp_path, one_rank_group):
    train_ids = pq.read_table(store / "train").column("item_id").to_numpy()
    assert (train_ids != 0).all()  # the cause: a vocabulary fit on train covers train
    _, _, moved, seen = _train(store, tmp_path, rate=0)
    assert (seen[True] != 0).all()
    for table in ("item_id", "user_id"):
        assert moved[table][1:].any() and not moved[table][0], table


def test_dropout_trains_the_oov_row_and_leaves_validation_alone(store, tmp_path, one_rank_group):
    cfg, checkpoint, moved, seen = _train(store, tmp_path, rate=1.0)  # every rare id, always
    assert (seen[True] == 0).all()  # max_count 1000: every item id is rare here
    valid = pq.read_table(store / "valid").column("item_id").to_numpy()
    np.testing.assert_array_equal(np.sort(seen[False]), np.sort(valid))  # untouched
    assert moved["item_id"][0] and moved["user_id"][0]

    report = evaluate(cfg, checkpoint, tmp_path / "eval")
    assert json.loads((tmp_path / "eval" / "report.json").read_text()) == json.loads(
        json.dumps(report))
    test = pq.read_table(store / "test")
    new = (test.column("item_id").to_numpy() == 0) | (test.column("user_id").to_numpy() == 0)
    assert new.any()
    slices = report["tasks"]["click"]["slices"]
    assert {e["value"]: e["rows"] for e in slices["new_ids"]} == {True: int(new.sum()),
                                                                 False: int((~new).sum())}
    assert set(slices) == {"new_ids", "new_ids:user_id", "new_ids:item_id"}
