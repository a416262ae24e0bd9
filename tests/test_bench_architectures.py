import pytest
import torch.distributed as dist

from pipelines.bench.architectures import DEFAULT_ARCHS, arch_overrides, table, train_one, train_single
from recmtl.config import ARCHITECTURES, derive


def _row(dataset, arch, aucs, speed):
    return {"dataset": dataset, "arch": arch, "samples_per_s": speed,
            "tasks": {t: {"auc": a, "logloss": 0.5, "oracle_auc": 0.9} for t, a in aucs.items()}}


def test_table_deltas_are_against_mmoe_of_the_same_store():
    rows = [_row("a", "mmoe", {"x": 0.80, "y": 0.70}, 1000.0),
            _row("a", "sparse_moe", {"x": 0.7985, "y": 0.6975}, 500.0),
            _row("b", "mmoe", {"x": 0.60}, 2000.0),
            _row("b", "sparse_moe", {"x": 0.61}, 1000.0),
            {"dataset": "b", "arch": "multitab", "error": "ValueError: no"}]
    lines = table(rows).splitlines()
    assert "x 0.7985 (-0.0015); y 0.6975 (-0.0025 !)" in lines[3]  # only y is > 0.002 behind
    assert lines[3].endswith("| 500 (0.50) |")
    assert "x 0.6100 (+0.0100)" in lines[5] and lines[5].endswith("| 1,000 (0.50) |")
    assert "failed: ValueError: no" in lines[6]
    assert lines[7].startswith("| a | oracle | x 0.9000; y 0.9000")


def test_default_archs_exist():
    assert {"mmoe", "sparse_moe", "multitab"} <= set(DEFAULT_ARCHS) <= set(ARCHITECTURES)


def test_arch_variants_add_their_overrides_after_the_architectures():
    assert arch_overrides("sparse_moe@model.moe_top_k=2")[-1] == "model.moe_top_k=2"
    assert arch_overrides("sparse_moe")[0] == "model.arch=sparse_moe"


def test_single_task_baselines_train_each_standalone_task_alone(smoke_cfg, tmp_path):
    """On the funnel only ctr trains alone (cvr is in the click space, ctcvr a product); its
    figures are those of a one-task config written out by hand, trained the same way."""
    cfg = derive(smoke_cfg, {"train.max_steps_per_epoch": 8})
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        single = train_single(cfg)
        by_hand = train_one(derive(cfg, {"tasks": [{"name": "ctr", "label": "click",
                                                   "oracle": "p_click"}]}))
    finally:
        dist.destroy_process_group()
    assert set(single["tasks"]) == {"ctr"}
    assert single["tasks"]["ctr"] == pytest.approx(by_hand["tasks"]["ctr"], abs=1e-12)
    assert 0.5 < single["tasks"]["ctr"]["auc"] < 1.0
