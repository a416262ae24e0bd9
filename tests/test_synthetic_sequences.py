import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from pipelines.synthetic.parts import SPLITS, rank_auc
from pipelines.synthetic.sequences import (
    SequenceWorldConfig,
    make_sequence_world,
    score_table,
    write_sequence_store,
)

CFG = SequenceWorldConfig(train_rows=20_000, valid_rows=3_000, test_rows=3_000,
                          rows_per_file=8_000, row_group_size=2_000, num_users=3_000,
                          num_items=2_000, num_categories=40, num_segments=16,
                          max_history_len=30, mean_history_len=12.0, seed=3)
HIST = ("hist_items", "hist_categories", "hist_age_hours", "hist_age_bucket")


def _load(root, split="train"):
    return ds.dataset(str(root / split)).to_table()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("sequences")
    return root, write_sequence_store(root, CFG)


def _lengths(column):
    return pc.fill_null(pc.list_value_length(column.combine_chunks()), -1).to_numpy()


def test_deterministic_by_seed(store, tmp_path):
    root, _ = store
    write_sequence_store(tmp_path / "again", CFG, seed=CFG.seed)
    for split in SPLITS:
        assert _load(root, split).equals(_load(tmp_path / "again", split)), split
    write_sequence_store(tmp_path / "other", CFG, seed=CFG.seed + 1)
    assert not _load(root).equals(_load(tmp_path / "other"))


def test_layout_schema_and_ids(store):
    root, summary = store
    ids = []
    for split, rows in zip(SPLITS, (CFG.train_rows, CFG.valid_rows, CFG.test_rows), strict=True):
        files = sorted((root / split).glob("part-*.parquet"))
        assert len(files) == -(-rows // CFG.rows_per_file)
        assert pq.ParquetFile(files[0]).metadata.num_row_groups == \
            -(-min(rows, CFG.rows_per_file) // CFG.row_group_size)
        t = _load(root, split)
        assert t.num_rows == rows == summary[split]["rows"]
        ids.append(t["impression_id"].to_numpy())
    ids = np.concatenate(ids)
    assert len(np.unique(ids)) == len(ids)
    schema = _load(root).schema
    assert schema.field("hist_items").type == pa.list_(pa.int64())
    assert schema.field("hist_categories").type == pa.list_(pa.int64())
    assert schema.field("hist_age_hours").type == pa.list_(pa.float32())
    assert schema.field("hist_age_bucket").type == pa.list_(pa.int64())
    for name in ("user_id", "item_id", "item_category", "hour", "device"):
        assert schema.field(name).type == pa.int64(), name
    for name in ("click", "conversion"):
        assert schema.field(name).type == pa.int8(), name


def test_history_lists_are_aligned_bounded_and_sometimes_empty_or_null(store):
    root, _ = store
    t = _load(root)
    lengths = _lengths(t["hist_items"])  # -1 marks a null list
    assert lengths.max() == CFG.max_history_len  # reached with these sizes, never passed
    for name in HIST[1:]:
        np.testing.assert_array_equal(_lengths(t[name]), lengths, err_msg=name)
    assert 0 < (lengths == -1).mean() < 0.1  # null: logged-out visitors
    assert 0 < (lengths == 0).mean() < 0.2  # empty: known users without history
    # Histories and candidates carry their items' true categories.
    world = make_sequence_world(CFG, CFG.seed).world
    items = pc.list_flatten(t["hist_items"].combine_chunks()).to_numpy()
    cats = pc.list_flatten(t["hist_categories"].combine_chunks()).to_numpy()
    np.testing.assert_array_equal(world.item_category[items], cats)
    np.testing.assert_array_equal(world.item_category[t["item_id"].to_numpy()],
                                  t["item_category"].to_numpy())


def test_ages_decrease_toward_the_most_recent(store):
    root, _ = store
    ages = _load(root)["hist_age_hours"].combine_chunks()
    owner = pc.list_parent_indices(ages).to_numpy()
    flat = pc.list_flatten(ages).to_numpy().astype(np.float64)
    same_row = owner[1:] == owner[:-1]
    assert same_row.sum() > 100_000
    assert (np.diff(flat)[same_row] < 0).all()
    assert (flat > 0).all()


def test_oracle_recomputed_from_columns(store):
    root, _ = store
    t = _load(root, "valid")
    logits = score_table(make_sequence_world(CFG, CFG.seed), CFG, t)
    np.testing.assert_allclose(logits.p_click, t["p_click"].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(logits.p_cvr, t["p_conversion_given_click"].to_numpy(),
                               rtol=1e-12)
    np.testing.assert_allclose(t["p_conversion"].to_numpy(),
                               t["p_click"].to_numpy() * t["p_conversion_given_click"].to_numpy(),
                               rtol=1e-12)
    # Rows without a history have no match term.
    no_history = _lengths(t["hist_items"]) <= 0
    assert no_history.any() and (logits.click_match[no_history] == 0).all()


def test_match_term_beats_no_history_and_mean_pooling(store):
    root, _ = store
    t = _load(root)
    sw = make_sequence_world(CFG, CFG.seed)
    logits = score_table(sw, CFG, t)
    click = t["click"].to_numpy()
    oracle = roc_auc_score(click, logits.click_base + logits.click_match)
    assert oracle > roc_auc_score(click, logits.click_base) + 0.04

    # The best a candidate-independent mean of history embeddings can do, scored against the
    # candidate with the true item vectors, at the best of a grid of weights.
    hist = t["hist_items"].combine_chunks()
    owner = pc.list_parent_indices(hist).to_numpy()
    vec = sw.unit_vec[pc.list_flatten(hist).to_numpy()]
    n = t.num_rows
    count = np.maximum(np.bincount(owner, minlength=n), 1)
    pooled = np.stack([np.bincount(owner, vec[:, k], n) for k in range(vec.shape[1])], 1)
    dot = np.einsum("nk,nk->n", pooled / count[:, None], sw.unit_vec[t["item_id"].to_numpy()])
    best_pooled = max(roc_auc_score(click, logits.click_base + a * dot)
                      for a in np.linspace(0, 2 * CFG.match_strength, 17))
    assert oracle > best_pooled + 0.025


def test_labels_follow_their_probabilities(store):
    root, summary = store
    t = _load(root)
    click = t["click"].to_numpy().astype(float)
    conv = t["conversion"].to_numpy().astype(float)
    p_click = t["p_click"].to_numpy()
    p_cvr = t["p_conversion_given_click"].to_numpy()
    assert (conv <= click).all()
    assert abs(click.sum() - p_click.sum()) < 5 * np.sqrt((p_click * (1 - p_click)).sum())
    clicked = click == 1
    q = p_cvr[clicked]
    assert abs(conv[clicked].sum() - q.sum()) < 5 * np.sqrt((q * (1 - q)).sum())
    assert 0.05 < click.mean() < 0.2 and 0.1 < conv[clicked].mean() < 0.35
    assert summary["train"]["ctr"] == pytest.approx(click.mean())
    assert summary["train"]["auc"]["click"] == pytest.approx(roc_auc_score(click, p_click))
    assert summary["train"]["auc"]["cvr"] == pytest.approx(roc_auc_score(conv[clicked], q))


def test_rank_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.random(5_000) < 0.2
    scores = np.round(rng.normal(size=5_000) + labels, 1)  # many ties
    assert rank_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert np.isnan(rank_auc(np.zeros(3, bool), np.arange(3.0)))


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="num_items"):
        dataclasses.replace(CFG, num_items=0)
    with pytest.raises(ValueError, match="mean_history_len"):
        dataclasses.replace(CFG, mean_history_len=-1.0)


def test_age_buckets_are_half_octaves_of_the_ages(store):
    """hist_age_bucket[j] = 1 + floor(2 log2(1 + age_j)), capped at AGE_BUCKETS (a float64
    loop over the raw ages, not the generator's vectorised function)."""
    from pipelines.synthetic.sequences import AGE_BUCKETS

    root, _ = store
    t = _load(root).slice(0, 2_000)
    ages = pc.list_flatten(t["hist_age_hours"].combine_chunks()).to_numpy().astype(np.float64)
    buckets = pc.list_flatten(t["hist_age_bucket"].combine_chunks()).to_numpy()
    expected = [min(1 + int(np.floor(2 * np.log2(1 + a))), AGE_BUCKETS) for a in ages]
    np.testing.assert_array_equal(buckets, expected)
    assert buckets.min() >= 1 and buckets.max() <= AGE_BUCKETS
