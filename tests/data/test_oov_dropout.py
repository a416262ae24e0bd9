"""OOV dropout on batches: only rare ids of vocabulary features are replaced, at the configured
rate (a binomial bound), the same way for a seed, independently per rank and batch; the rare
ids are read from the vocabulary's train counts."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recmtl.config import load_config
from recmtl.data.batch import Batch
from recmtl.data.oov import OovDropout, rare_ids
from recmtl.train.worker import oov_dropout
from tests.raw_export import prepare_vocab_store

RARE = np.array([3, 7, 11, 20])


def _batch(rng, n=40_000):
    """item: half rare ids, half others; user: the same values, a feature left alone; a
    multi-valued history of rare ids."""
    item = np.where(rng.random(n) < 0.5, rng.choice(RARE, n), rng.integers(21, 100, n))
    lengths = rng.integers(0, 3, n)
    hist = rng.choice(RARE, int(lengths.sum()))
    kjt = KeyedJaggedTensor(keys=["item", "user", "hist"],
                            values=torch.from_numpy(np.concatenate([item, item, hist])),
                            lengths=torch.from_numpy(np.concatenate(
                                [np.ones(n, np.int32), np.ones(n, np.int32),
                                 lengths.astype(np.int32)])))
    return Batch(dense=torch.zeros(n, 1), sparse=kjt, labels={"y": torch.zeros(n)})


def test_only_rare_ids_are_replaced_at_the_rate():
    batch = _batch(np.random.default_rng(0))
    drop = OovDropout({"item": RARE, "hist": RARE}, rate=0.1, seed=5)
    out, replaced = drop.apply(batch, epoch=0, index=0)
    for key in ("item", "hist"):
        before, after = batch.sparse[key].values().numpy(), out.sparse[key].values().numpy()
        changed = before != after
        assert (after[changed] == 0).all() and np.isin(before[changed], RARE).all()
        n = int(np.isin(before, RARE).sum())  # Binomial(n, 0.1): within 5 sigma
        assert abs(changed.sum() - 0.1 * n) < 5 * np.sqrt(n * 0.1 * 0.9), key
    torch.testing.assert_close(out.sparse["user"].values(), batch.sparse["user"].values())
    torch.testing.assert_close(out.sparse.lengths(), batch.sparse.lengths())
    assert replaced == sum(int((batch.sparse[k].values() != out.sparse[k].values()).sum())
                           for k in ("item", "hist"))
    assert (batch.sparse["item"].values() != 0).all()  # the input batch is not modified


def test_draws_are_seeded_per_batch_and_rank():
    batch = _batch(np.random.default_rng(1), n=5_000)

    def replaced(seed, rank, epoch, index):
        out, _ = OovDropout({"item": RARE}, 0.3, seed, rank).apply(batch, epoch, index)
        return (out.sparse["item"].values() == 0).numpy()

    first = replaced(0, 0, 0, 4)
    np.testing.assert_array_equal(first, replaced(0, 0, 0, 4))  # two runs, one seed
    for other in (replaced(1, 0, 0, 4), replaced(0, 1, 0, 4), replaced(0, 0, 1, 4),
                  replaced(0, 0, 0, 5)):
        assert not np.array_equal(first, other)
        # independent draws: the overlap of two masks is about 0.3 of either
        both, one = (first & other).sum(), first.sum()
        assert abs(both / one - 0.3) < 0.06


def test_rate_zero_or_no_rare_feature_leaves_the_batch():
    batch = _batch(np.random.default_rng(2), n=100)
    assert OovDropout({"item": RARE}, 0.0, 0).apply(batch, 0, 0) == (batch, 0)
    assert OovDropout({"other": RARE}, 0.5, 0).apply(batch, 0, 0) == (batch, 0)


def test_rare_ids_read_the_vocabulary_counts(tmp_path):
    vocab = pa.table({"value": ["a", "b", "c", "d", "e"], "id": [1, 2, 3, 5, 6],
                      "count": [50, 2, 0, 10, 11], "last_seen": [0] * 5})
    (tmp_path / "vocab").mkdir()
    pq.write_table(vocab, tmp_path / "vocab" / "item.parquet")
    (tmp_path / "transforms.json").write_text(json.dumps({"sparse": [
        {"name": "item_id", "table": "item", "transform": "vocab", "multi_valued": False,
         "vocab": "vocab/item.parquet"},
        {"name": "clicks", "table": "item", "transform": "vocab", "multi_valued": True,
         "vocab": "vocab/item.parquet"},
        {"name": "user_id", "table": "user", "transform": "hash", "multi_valued": False}]}))
    got = rare_ids(str(tmp_path), max_count=10)
    assert set(got) == {"item_id", "clicks"}  # hash tables have no OOV row to train
    np.testing.assert_array_equal(got["item_id"], [2, 5])  # counts 1..10; 0: unseen today
    assert set(rare_ids(str(tmp_path), 10, ["item_id"])) == {"item_id"}
    assert rare_ids(str(tmp_path / "vocab"), 10) == {}  # no transforms.json: not prepared


def test_every_rank_applies_one_rule(tmp_path):
    out = prepare_vocab_store(tmp_path)
    cfg = load_config(out / "shop.yaml", ["train.oov_dropout.max_count=5"])
    ranks = [oov_dropout(cfg, rank) for rank in (0, 1)]
    assert ranks[0] is not None and ranks[1] is not None
    counts = pq.read_table(out / "vocab" / "user_id.parquet").to_pandas()
    want = np.sort(counts.loc[counts["count"].between(1, 5), "id"].to_numpy())
    for drop in ranks:
        np.testing.assert_array_equal(drop.rare["user_id"], want)
    assert [d.rank for d in ranks] == [0, 1] and ranks[0].rate == ranks[1].rate == 0.1
    assert oov_dropout(load_config(out / "shop.yaml", ["train.oov_dropout.rate=0"]), 0) is None
