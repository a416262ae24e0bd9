"""`python -m pipelines.bench.eval --rows 10000000`: how long ``build_report`` takes at scale.

Builds an ESMM-shaped evaluation set in memory, as ``recmtl.predict`` would return it (float64
columns, probabilities that were float32 model outputs, group ids as floats): ``ctr`` over all
rows, ``cvr`` in the clicked rows' sample space, ``ctcvr`` composed as ctr x cvr, each with an
oracle. Base rates follow the synthetic store (CTR ~11%, CVR ~22% of clicks). Prints seconds
per part of the report, the total and the peak RSS of this process.
"""

from __future__ import annotations

import resource
import sys
import time

import numpy as np

from pipelines.bench.harness import bench_parser, parse, print_table, run_bench, write_results
from recmtl.config import TaskConfig
from recmtl.metrics.formatting import format_interval
from recmtl.metrics.report import build_report
from recmtl.metrics.slices import SliceColumn

TASKS = (TaskConfig("ctr", "click", oracle="p_click"),
         TaskConfig("cvr", "conversion", space="click", oracle="p_cvr"),
         TaskConfig("ctcvr", "conversion", product_of=("ctr", "cvr")))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def eval_columns(rows: int, seed: int = 0, rows_per_group: int = 10) -> dict[str, np.ndarray]:
    """``{"click", "conversion", "p_click", "p_cvr", "group", "pred/<task>"}``, float64 [rows].

    Predictions are the oracle logits plus noise, rounded through float32 as a model's are.
    """
    rng = np.random.default_rng(seed)
    click_logit = rng.normal(-2.6, 1.2, rows)
    cvr_logit = rng.normal(-1.5, 1.0, rows)
    p_click, p_cvr = _sigmoid(click_logit), _sigmoid(cvr_logit)
    click = (rng.random(rows) < p_click).astype(np.float64)
    conversion = click * (rng.random(rows) < p_cvr)
    pred_ctr = _sigmoid(click_logit + rng.normal(0, 0.6, rows)).astype(np.float32)
    pred_cvr = _sigmoid(cvr_logit + rng.normal(0, 0.8, rows)).astype(np.float32)
    return {
        "click": click, "conversion": conversion,
        "p_click": p_click.astype(np.float32).astype(np.float64),
        "p_cvr": p_cvr.astype(np.float32).astype(np.float64),
        "group": rng.integers(0, max(rows // rows_per_group, 1), rows).astype(np.float64),
        "pred/ctr": pred_ctr.astype(np.float64), "pred/cvr": pred_cvr.astype(np.float64),
        "pred/ctcvr": (pred_ctr * pred_cvr).astype(np.float64),  # composed in float32, as served
    }


def peak_rss_mb() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS.
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 1024**2
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def bench_eval(rows: int, bootstrap: int, slice_values: int, seed: int) -> dict[str, float]:
    """Builds the set, times ``build_report`` on it; prints the parts and returns the timings."""
    t0 = time.perf_counter()
    cols = eval_columns(rows, seed)
    slices = {}
    if slice_values:
        values = np.random.default_rng(seed + 1).integers(0, slice_values, rows)
        slices["segment"] = SliceColumn.from_array(values)
    print(f"built {rows:,} rows x {len(TASKS)} tasks in {time.perf_counter() - t0:.1f}s")

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    report = build_report(TASKS, cols, bootstrap=bootstrap, slices=slices, timings=timings)
    total = time.perf_counter() - t0
    print_table([{"part": part, "seconds": seconds} for part, seconds in timings.items()]
                + [{"part": "total", "seconds": total}], {"seconds": ".2f"})
    print(f"build_report total {total:.2f}s for {rows:,} rows x {len(TASKS)} tasks "
          f"(bootstrap {bootstrap}); peak RSS {peak_rss_mb():,.0f} MB")
    print("AUC [95% interval] " + ", ".join(f"{k} {format_interval(m['auc'], m['auc_ci95'])}"
                                          for k, m in report["tasks"].items()))
    return {"rows": rows, "bootstrap": bootstrap, "total_s": round(total, 2),
            "peak_rss_mb": round(peak_rss_mb()), **{f"{k}_s": round(v, 2) for k, v in timings.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("eval", __doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--slice-values", type=int, default=0,
                        help="also slice by a column with this many values (0: no slices)")
    parser.add_argument("--seed", type=int, default=0)
    args = parse(parser, argv)
    return run_bench(lambda: write_results(
        args, bench_eval(args.rows, args.bootstrap, args.slice_values, args.seed)))


if __name__ == "__main__":
    sys.exit(main())
