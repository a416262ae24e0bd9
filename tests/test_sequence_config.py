"""The sequence keys of a sparse feature: cross-field rules name the key that breaks them."""

from dataclasses import replace

import pytest

from recmtl.config import ConfigError, derive, load_config
from recmtl.models.features import embedding_configs, pooled_width, sequence_embedding_configs


@pytest.fixture(scope="module")
def din():
    return load_config("configs/sequences/din.yaml")


def _edit(cfg, feature, **changes):
    """The config with ``changes`` to ``feature`` (``multi_valued``, ``sequence``) or else to
    its sequence's keys."""
    own = {"multi_valued", "sequence"}
    sparse = []
    for f in cfg.features.sparse:
        if f.name == feature:
            f = replace(f, **{k: v for k, v in changes.items() if k in own})
            seq_changes = {k: v for k, v in changes.items() if k not in own}
            if seq_changes:
                f = replace(f, sequence=replace(f.sequence, **seq_changes))
        sparse.append(f)
    return derive(cfg, {"features.sparse": sparse})


@pytest.mark.parametrize("changes,message", [
    ({"multi_valued": False}, r"features\.sparse\.hist_items\.sequence: a sequence must be "
                              "multi_valued"),
    ({"query": "nope"}, r"features\.sparse\.hist_items\.sequence\.query: unknown sparse "
                        "feature 'nope'"),
    ({"query": "user_id"}, r"sequence\.query: 'user_id' must be a single-valued feature of "
                           "the same table 'item'"),
    ({"query": "hist_categories"}, r"sequence\.query: 'hist_categories' must be"),
    ({"max_len": 0}, r"features\.sparse\.hist_items\.sequence: max_len"),
    ({"dropout": 1.0}, r"features\.sparse\.hist_items\.sequence\.dropout"),
    ({"side": ("item_id",)}, r"sequence\.side: 'item_id' must be a multi-valued feature that "
                             "is not a sequence"),
    ({"side": ("hist_categories",)}, r"sequence\.side: 'hist_categories' must be"),
    ({"side": ("nope",)}, r"sequence\.side: 'nope' must be"),
    ({"encoder": "bst", "num_heads": 3}, r"sequence\.num_heads: 3 must divide the dim of "
                                         "table 'item' \\(8\\)"),
])
def test_broken_sequence_names_the_key(din, changes, message):
    with pytest.raises(ConfigError, match=message):
        _edit(din, "hist_items", **changes)


def test_an_unknown_encoder_is_refused_while_loading(din):
    with pytest.raises(ConfigError, match=r"encoder.*expected one of \('din', 'bst'\), got 'gru'"):
        derive(din, {"features.sparse": [{"name": "h", "table": "item", "multi_valued": True,
                                         "sequence": {"query": "i", "encoder": "gru"}}]})


def test_dtrn_and_infnet_take_din_sequences_with_the_dot_interaction(din):
    derive(din, {"model.arch": "dtrn"})  # dtrn takes each task's dot products itself
    derive(din, {"model.arch": "infnet"})  # infnet pairs the features but the histories
    with pytest.raises(ConfigError, match=r"hist_items\.sequence\.encoder: bst is not for dtrn"):
        derive(_edit(din, "hist_items", encoder="bst"), {"model.arch": "dtrn",
                                                       "model.interaction": "none"})
    infnet = load_config("configs/sequences/infnet.yaml")  # each history: 50 slots of 8 + 1
    # 7 pooled blocks of 8 (the age-bucket side list is one), 2 histories of 50 slots of 8 + 1
    assert pooled_width(infnet) == 7 * 8 + 2 * 50 * 9
    dtrn = load_config("configs/sequences/dtrn.yaml")
    # 7 pooled blocks of 8, and each of the 2 histories one interest of 8 per base task (ctr, cvr)
    assert pooled_width(dtrn) == 7 * 8 + 2 * (2 * 8)


def test_sequence_tables_need_one_dim_and_no_row_decay(din):
    tables = [replace(t, dim=16) if t.name == "category" else t for t in din.features.tables]
    with pytest.raises(ConfigError, match=r"features\.tables: the tables of sequence features "
                                          r"\['age', 'category', 'item'\] must share one dim"):
        derive(din, {"features.tables": tables, "model.interaction": "none"})
    tables = [replace(t, weight_decay=0.1) if t.name == "item" else t for t in din.features.tables]
    with pytest.raises(ConfigError, match=r"features\.tables\.item: managed_collision and "
                                          "weight_decay are not built"):
        derive(din, {"features.tables": tables})


def test_sequence_tables_leave_the_bag_collection(din):
    # the side list's table (the events' age buckets) is looked up unpooled too
    assert {c.name for c in sequence_embedding_configs(din)} == {"item", "category", "age"}
    assert sorted(c.feature_names for c in sequence_embedding_configs(din)) == [
        ["hist_age_bucket"], ["item_category", "hist_categories"], ["item_id", "hist_items"]]
    assert {c.name for c in embedding_configs(din)} == {"user", "segment", "hour", "device"}
    assert pooled_width(din) == 8 * len(din.features.sparse)  # one [B, D] block per feature
    pooled = _edit(_edit(din, "hist_items", sequence=None), "hist_categories", sequence=None)
    assert sequence_embedding_configs(pooled) == []
    assert not pooled.features.sequence_tables()


def test_sequences_store_is_not_daily():
    with pytest.raises(ConfigError, match="synthetic.kind: sequences writes"):
        load_config("configs/sequences/din.yaml", ["synthetic.days=2"])
