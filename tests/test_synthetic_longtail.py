"""The long-tailed store (``synthetic.kind: longtail``): Zipf ids, oracle columns that the
labels follow, string ids for `recmtl prepare`, determinism by seed."""

import numpy as np
import pyarrow.dataset as ds
import pytest

from pipelines.synthetic.store import generate
from recmtl.config import ConfigError, derive, load_config

SMALL = ["synthetic.train_rows=80000", "synthetic.valid_rows=10000", "synthetic.test_rows=10000",
         "synthetic.rows_per_file=40000", "synthetic.num_users=200000",
         "synthetic.num_items=20000", "synthetic.longtail.user_exponent=1.05",
         "synthetic.longtail.item_exponent=1.3"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    cfg = load_config("configs/longtail/longtail.yaml", SMALL)
    root = tmp_path_factory.mktemp("longtail")
    counts = generate(cfg, root)
    return cfg, root, counts, ds.dataset(str(root / "raw")).to_table()


def _rank_slope(ids: np.ndarray, top: int) -> float:
    """Least-squares slope of log count against log rank over the ``top`` most frequent ids."""
    counts = np.sort(np.unique(ids, return_counts=True)[1])[::-1][:top].astype(np.float64)
    return float(np.polyfit(np.log(np.arange(1, len(counts) + 1)), np.log(counts), 1)[0])


def test_layout_and_string_ids(store):
    cfg, root, counts, table = store
    syn = cfg.synthetic
    assert counts == {"raw": syn.train_rows + syn.valid_rows + syn.test_rows} == {"raw": len(table)}
    assert len(list((root / "raw").glob("part-*.parquet"))) == 3
    assert np.array_equal(table["impression_id"].to_numpy(), np.arange(len(table)))
    for column, prefix in (("user_id", "u"), ("item_id", "i"), ("user_segment", "s"),
                           ("item_category", "c")):
        values = table[column].to_pylist()
        assert all(v.startswith(prefix) and v[1:].isdigit() for v in values[:1000]), column


def test_zipf_rank_frequency_slope_follows_the_knobs(store):
    cfg, _, _, table = store
    lt = cfg.synthetic.longtail
    for column, exponent in (("user_id", lt.user_exponent), ("item_id", lt.item_exponent)):
        slope = _rank_slope(np.asarray(table[column].to_pylist()), top=200)
        assert abs(slope + exponent) < 0.1, (column, slope, exponent)


def test_most_ids_are_rare(store):
    _, _, _, table = store
    _, counts = np.unique(np.asarray(table["user_id"].to_pylist()), return_counts=True)
    assert (counts == 1).mean() > 0.5  # a long tail: most users seen once
    assert counts.max() > 1000  # and a head


def test_labels_follow_the_oracle_probabilities(store):
    _, _, _, table = store
    click = table["click"].to_numpy().astype(np.float64)
    conversion = table["conversion"].to_numpy().astype(np.float64)
    p_click = table["p_click"].to_numpy().astype(np.float64)
    p_conv = table["p_conversion_given_click"].to_numpy().astype(np.float64)
    assert set(np.unique(conversion[click == 0])) == {0.0}  # no conversion without a click
    # Mean label against mean probability, within 4 binomial standard errors (float64).
    for y, p in ((click, p_click), (conversion[click == 1], p_conv[click == 1])):
        se = np.sqrt(np.sum(p * (1 - p))) / len(p)
        assert abs(y.mean() - p.mean()) < 4 * se, (y.mean(), p.mean(), se)
        assert 0.02 < y.mean() < 0.5
    # The probabilities carry the signal: AUC of the oracle well above chance.
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(click, p_click) > 0.75


def test_deterministic_by_seed(store, tmp_path):
    cfg, _, _, table = store
    generate(cfg, tmp_path / "again")
    assert ds.dataset(str(tmp_path / "again" / "raw")).to_table().equals(table)
    generate(derive(cfg, {"seed": 1}), tmp_path / "other")
    assert not ds.dataset(str(tmp_path / "other" / "raw")).to_table().equals(table)


@pytest.mark.parametrize("key, value", [("user_exponent", 0), ("item_bias_scale", -1)])
def test_bad_knob_names_its_key(key, value):
    with pytest.raises(ConfigError, match=f"synthetic.longtail.{key}"):
        load_config("configs/longtail/longtail.yaml", [f"synthetic.longtail.{key}={value}"])
