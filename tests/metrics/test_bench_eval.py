import numpy as np

from pipelines.bench.eval import TASKS, eval_columns, main
from recmtl.metrics.auc import auc


def test_bench_data_has_each_task_in_its_space_and_the_script_runs(capsys):
    cols = eval_columns(20000, seed=1)
    assert np.all(cols["conversion"] <= cols["click"])  # conversions only on clicks
    assert 0.05 < cols["click"].mean() < 0.2
    # Noisy predictions rank worse than the oracle they were drawn around.
    assert auc(cols["click"], cols["pred/ctr"]) < auc(cols["click"], cols["p_click"])
    results = main(["--rows", "20000", "--bootstrap", "20", "--slice-values", "5"])
    assert results["rows"] == 20000 and results["total_s"] > 0
    for part in ("rank", "auc", "gauc", "bootstrap", "curves", "ece", "slices"):
        assert results[f"{part}_s"] >= 0
    out = capsys.readouterr().out
    assert "build_report total" in out and "peak RSS" in out
    assert [t.name for t in TASKS] == ["ctr", "cvr", "ctcvr"]
