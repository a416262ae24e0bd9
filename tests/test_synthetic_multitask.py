import numpy as np
import pyarrow.dataset as ds
import pytest
from sklearn.metrics import roc_auc_score

from pipelines.synthetic.multitask import (
    intended_correlation,
    write_multitask_store,
)
from pipelines.synthetic.parts import SPLITS
from pipelines.synthetic.store import generate
from recmtl.config import ConfigError, derive, load_config

SMALL = ["synthetic.train_rows=30000", "synthetic.valid_rows=2000", "synthetic.test_rows=2000",
         "synthetic.rows_per_file=10000", "synthetic.row_group_size=5000",
         "synthetic.num_users=20000", "synthetic.num_items=20000"]


def _cfg(tmp_path, *overrides):
    return load_config("configs/multitask/high_correlation.yaml",
                       [f"data.root={tmp_path}", *SMALL, *overrides])


def _train(root):
    return ds.dataset(str(root / "train")).to_table()


def _matrix(t, prefix, num_tasks):
    return np.stack([t[f"{prefix}{i}"].to_numpy() for i in range(num_tasks)],
                    axis=1).astype(np.float64)


@pytest.mark.parametrize("rho", [0.0, 0.9])
def test_logit_correlation_is_the_knobs(tmp_path, rho):
    """The empirical correlation of the oracle logits matches rho (sqrt((1-c_s)(1-c_t)) +
    sqrt(c_s c_t)) with unequal complexities, recomputed from the written columns."""
    cfg = _cfg(tmp_path, f"synthetic.multitask.correlation={rho}")
    write_multitask_store(cfg)
    p = _matrix(_train(tmp_path), "p", 3)
    logit = np.log(p / (1 - p))
    # complexities 0.2, 0.5, 0.8: same-mix factors sqrt(.8*.5) + sqrt(.2*.5) = 0.9487 (t0-t1,
    # t1-t2) and 2 sqrt(.8*.2) = 0.8 (t0-t2)
    mix = np.array([[1.0, 0.948683, 0.8], [0.948683, 1.0, 0.948683], [0.8, 0.948683, 1.0]])
    want = np.where(np.eye(3) > 0, 1.0, rho * mix)
    np.testing.assert_allclose(intended_correlation(cfg.synthetic.multitask), want, atol=1e-6)
    np.testing.assert_allclose(np.corrcoef(logit, rowvar=False), want, atol=0.03)


def test_labels_follow_their_oracles(tmp_path):
    """Labels are Bernoulli(p) independently given the row: per-task rates match the mean p,
    label covariances match the oracles' covariances, and the summary's oracle AUC is sklearn's
    on the written columns; more correlation gives more correlated labels."""
    cfg = _cfg(tmp_path / "high")
    summary = write_multitask_store(cfg)
    t = _train(tmp_path / "high")
    y, p = _matrix(t, "y", 3), _matrix(t, "p", 3)
    np.testing.assert_allclose(y.mean(axis=0), p.mean(axis=0), atol=0.01)
    off = ~np.eye(3, dtype=bool)
    np.testing.assert_allclose(np.cov(y, rowvar=False)[off], np.cov(p, rowvar=False)[off],
                               atol=0.006)
    for i in range(3):
        assert summary["train"]["oracle_auc"][i] == pytest.approx(roc_auc_score(y[:, i], p[:, i]),
                                                                  abs=1e-9)
    low = _cfg(tmp_path / "low", "synthetic.multitask.correlation=0.0")
    write_multitask_store(low)
    y_low = _matrix(_train(tmp_path / "low"), "y", 3)
    assert np.abs(np.corrcoef(y_low, rowvar=False)[off]).max() < 0.03
    assert np.corrcoef(y, rowvar=False)[off].min() > 0.15


def test_complexity_zero_is_additive_one_is_pure_interaction(tmp_path):
    """c = 0: the logit is additive in user, item, context and the dense floats (a least-squares
    fit on their one-hots explains it all); c = 1: no additive part (the fit explains ~nothing)."""
    cfg = _cfg(tmp_path, "synthetic.multitask.num_tasks=2", "synthetic.multitask.complexity=[0.0, 1.0]",
               "synthetic.num_users=150", "synthetic.num_items=100", "synthetic.train_rows=12000")
    write_multitask_store(cfg)
    t = _train(tmp_path)
    n = t.num_rows
    blocks = [np.ones((n, 1))]
    for col, size in (("user_id", 150), ("item_id", 100), ("context", 20)):
        blocks.append(np.eye(size)[t[col].to_numpy()])
    blocks.append(np.stack([t[f"dense_{i}"].to_numpy() for i in range(4)], axis=1))
    x = np.concatenate(blocks, axis=1)
    p = _matrix(t, "p", 2)
    for task, want in ((0, 1.0), (1, 0.0)):
        logit = np.log(p[:, task] / (1 - p[:, task]))
        resid = logit - x @ np.linalg.lstsq(x, logit, rcond=None)[0]
        r2 = 1 - resid.var() / logit.var()
        assert r2 == pytest.approx(want, abs=0.05), (task, r2)


def test_layout_and_determinism(tmp_path):
    cfg = _cfg(tmp_path / "a", "synthetic.train_rows=5000")
    assert generate(cfg) == {"train": 5000, "valid": 2000, "test": 2000}
    t = _train(tmp_path / "a")
    assert t.column_names == ["impression_id", "user_id", "item_id", "context",
                              *(f"dense_{i}" for i in range(4)), "y0", "y1", "y2", "p0", "p1", "p2"]
    generate(derive(cfg, {"data.root": str(tmp_path / "b")}))
    for split in SPLITS:
        a = ds.dataset(str(tmp_path / "a" / split)).to_table()
        assert a.equals(ds.dataset(str(tmp_path / "b" / split)).to_table()), split
    generate(derive(cfg, {"data.root": str(tmp_path / "c"), "seed": 1}))
    assert not t.equals(_train(tmp_path / "c"))


@pytest.mark.parametrize("override, key", [
    ("synthetic.multitask.num_tasks=8", "synthetic.multitask.num_tasks"),
    ("synthetic.multitask.complexity=[0.5]", "synthetic.multitask.complexity"),
    ("synthetic.multitask.complexity=[0.5, 0.5, 1.5]", "synthetic.multitask.complexity"),
    ("synthetic.multitask.correlation=-0.1", "synthetic.multitask.correlation"),
    ("synthetic.multitask.base_rate=1.0", "synthetic.multitask.base_rate"),
    ("synthetic.days=3", "synthetic.kind: multitask"),
    ("synthetic.num_categories=8", "synthetic.num_categories"),
])
def test_bad_knobs_name_their_key(tmp_path, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        _cfg(tmp_path, override)
