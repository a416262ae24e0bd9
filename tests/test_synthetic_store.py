import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from pipelines.synthetic.parts import SPLITS
from pipelines.synthetic.store import generate
from recmtl.config import load_config


def _load(root, split):
    return ds.dataset(str(root / split)).to_table()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    cfg = load_config("configs/smoke.yaml")
    root = tmp_path_factory.mktemp("store")
    counts = generate(cfg, root)
    return cfg, root, counts


def test_deterministic_by_seed(store, tmp_path):
    cfg, root, _ = store
    generate(cfg, tmp_path / "again")
    assert _load(root, "train").equals(_load(tmp_path / "again", "train"))
    other = load_config("configs/smoke.yaml", ["seed=1"])
    generate(other, tmp_path / "other")
    assert not _load(root, "train").equals(_load(tmp_path / "other", "train"))


def test_layout_counts_and_ids(store):
    cfg, root, counts = store
    syn = cfg.synthetic
    assert counts == {"train": syn.train_rows, "valid": syn.valid_rows, "test": syn.test_rows}
    ids = []
    for split in SPLITS:
        files = sorted((root / split).glob("part-*.parquet"))
        assert len(files) == -(-counts[split] // syn.rows_per_file)
        assert pq.ParquetFile(files[0]).metadata.num_row_groups == \
            -(-min(syn.rows_per_file, counts[split]) // syn.row_group_size)
        t = _load(root, split)
        assert t.num_rows == counts[split]
        ids.append(t["impression_id"].to_numpy())
        tables = {x.name: x.num_embeddings for x in cfg.features.tables}
        for f in cfg.features.sparse:
            col = t[f.name].combine_chunks()
            values = col.flatten().to_numpy() if f.multi_valued else col.to_numpy()
            assert values.min() >= 0 and values.max() < tables[f.table], f.name
    ids = np.concatenate(ids)
    assert len(np.unique(ids)) == len(ids)  # impression ids unique across splits


def test_funnel_labels_follow_their_probabilities(store):
    _, root, _ = store
    t = _load(root, "train")
    click = t["click"].to_numpy().astype(float)
    conv = t["conversion"].to_numpy().astype(float)
    p_click = t["p_click"].to_numpy().astype(float)
    p_conv = t["p_conversion_given_click"].to_numpy().astype(float)
    assert (conv <= click).all()  # no conversion without a click
    # Sum of Bernoulli draws within 5 standard deviations of its expectation.
    assert abs(click.sum() - p_click.sum()) < 5 * np.sqrt((p_click * (1 - p_click)).sum())
    clicked = click == 1
    q = p_conv[clicked]
    assert abs(conv[clicked].sum() - q.sum()) < 5 * np.sqrt((q * (1 - q)).sum())
    lengths = np.diff(t["recent_categories"].combine_chunks().offsets.to_numpy())
    assert lengths.min() == 0 and lengths.max() == 6
