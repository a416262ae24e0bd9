"""The Census-Income (KDD) pipeline, on the real file when ../shared has it."""

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.feature_store.census import CATEGORICAL, DEFAULT_SRC, NUMERIC, prepare, split_bucket
from recmtl.config import load_config

pytestmark = pytest.mark.skipif(not Path(DEFAULT_SRC).exists(), reason="no ../shared census file")


def _splitmix64_bucket(i: int) -> int:  # independent pure-Python reference
    mask = (1 << 64) - 1
    z = (i + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return (z ^ (z >> 31)) % 100


@pytest.fixture(scope="module")
def census(tmp_path_factory):
    out = tmp_path_factory.mktemp("census")
    stats = prepare(DEFAULT_SRC, out)
    tables = {s: pq.read_table(out / s / "part-00000.parquet").to_pandas()
              for s in ("train", "valid", "test")}
    return out, stats, tables


def test_split_is_a_stable_hash():
    idx = np.array([0, 1, 2, 99761, 123456789])
    assert split_bucket(idx).tolist() == [_splitmix64_bucket(int(i)) for i in idx]


def test_rows_labels_and_no_leakage(census):
    _, stats, t = census
    ids = [set(df["row_id"]) for df in t.values()]
    assert sum(len(s) for s in ids) == 99_762  # every row once
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert abs(len(ids[0]) / 99_762 - 0.6) < 0.01
    both = {k: np.concatenate([df[k].to_numpy() for df in t.values()]) for k in ("income",
                                                                                  "marital")}
    assert both["income"].mean() == pytest.approx(0.062, abs=0.001)  # README: 6.2%
    assert both["marital"].mean() == pytest.approx(0.432, abs=0.001)  # README: 43.2%


def test_vocabularies_and_statistics_come_from_train_only(census):
    out, stats, t = census
    for c in CATEGORICAL:
        assert t["train"][c].min() >= 1  # every train value is in the vocabulary
        assert t["train"][c].max() == stats["cardinalities"][c] - 1
        for split in ("valid", "test"):
            assert t[split][c].max() < stats["cardinalities"][c]
    for c in NUMERIC:
        assert t["train"][c].mean() == pytest.approx(0.0, abs=1e-3)
        assert t["train"][c].std() == pytest.approx(1.0, abs=1e-3)
    cfg = load_config(out / "census.yaml")
    assert {x.name: x.num_embeddings for x in cfg.features.tables} == stats["cardinalities"]
    assert [t.name for t in cfg.tasks] == ["income", "marital"]
    assert "marital_stat" not in [f.name for f in cfg.features.sparse]  # the label's source
