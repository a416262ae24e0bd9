from pipelines.bench.architectures import DEFAULT_ARCHS, table
from recmtl.config import ARCHITECTURES


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
