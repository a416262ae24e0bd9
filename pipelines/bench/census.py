"""Census-Income (KDD): MMoE with each numeric encoding against gradient-boosted trees on the
same split (issue #16, item 3).

Prepares the split (``recmtl prepare-census``: 60/20/20 by a stable hash, vocabularies and
numeric statistics from train), trains MMoE (``data/census/census.yaml``: 8 experts, 12
epochs, 2 Ray workers) with ``model.numeric_encoding`` none, piecewise_linear and periodic,
each a real `recmtl train` run, and fits scikit-learn's ``HistGradientBoostingClassifier`` per
task on the same prepared columns (id columns as categorical features, the dense floats as
they are) in the same process. Prints test AUC and logloss per task for every model, marks
the MMoE variant with the best mean validation AUC (chosen without the test split) and
writes the raw numbers (and the table as Markdown) to ``--json`` (``--out``).

    python -m pipelines.bench.census
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.dataset as ds

from pipelines.bench.harness import bench_parser, format_table, parse, print_table, run_bench, write_results
from pipelines.bench.quality import run_variant
from pipelines.feature_store.census import CATEGORICAL, DEFAULT_SRC, NUMERIC, prepare

TASKS = ("income", "marital")
ENCODINGS: dict[str, list[str]] = {
    "none": ["model.numeric_encoding=none"],
    "piecewise_linear": ["model.numeric_encoding=piecewise_linear", "model.numeric_bins=16",
                         "model.numeric_dim=8"],
    "periodic": ["model.numeric_encoding=periodic", "model.numeric_dim=8"],
}


def _split(root: Path, split: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    table = ds.dataset(str(root / split)).to_table()
    x = np.column_stack([table[c].to_numpy().astype(np.float64) for c in (*CATEGORICAL, *NUMERIC)])
    return x, {t: table[t].to_numpy().astype(np.int64) for t in TASKS}


def _logloss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)  # as the report clips
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def gradient_boosting(root: Path, seed: int = 0, max_iter: int = 100) -> dict[str, Any]:
    """Per task: scikit-learn's HistGradientBoostingClassifier (defaults but ``max_iter``, the
    id columns categorical) fit on train; AUC and logloss on valid and test."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    data = {s: _split(root, s) for s in ("train", "valid", "test")}
    categorical = [True] * len(CATEGORICAL) + [False] * len(NUMERIC)
    out: dict[str, Any] = {}
    for task in TASKS:
        model = HistGradientBoostingClassifier(categorical_features=categorical, max_iter=max_iter,
                                               random_state=seed)
        model.fit(data["train"][0], data["train"][1][task])
        out[task] = {}
        for split in ("valid", "test"):
            x, y = data[split]
            p = model.predict_proba(x)[:, 1]
            out[task][split] = {"auc": float(roc_auc_score(y[task], p)),
                                "logloss": _logloss(y[task], p)}
        out[task]["iterations"] = int(model.n_iter_)
    return out


def bench(src: str, root: str, config: str, overrides: list[str],
          encodings: list[str]) -> dict[str, Any]:
    prepare(src, root)
    trees = gradient_boosting(Path(root))
    print("hist_gradient_boosting: fit", flush=True)
    mmoe = []
    for name in encodings:
        mmoe.append(run_variant(config, f"census-{name}", ENCODINGS[name], overrides))
        print(f"mmoe {name}: trained in {mmoe[-1]['wall_seconds']:.0f} s", flush=True)
    best = max(mmoe, key=lambda r: np.mean([r["valid"].get(f"valid/auc_{t}", 0) for t in TASKS]))
    result = {"config": config, "trees": trees, "mmoe": mmoe, "best_on_valid": best["variant"]}
    result["table"] = table(result)
    print_table(table_rows(result))
    return result


def table_rows(result: dict[str, Any]) -> list[dict[str, str]]:
    """One row per model, test AUC and logloss per task, then MMoE (best) - trees."""
    def row(model: str, auc: dict[str, float], loss: dict[str, float], spec: str) -> dict[str, str]:
        return ({"model": model} | {f"{t} AUC": format(auc[t], spec) for t in TASKS}
                | {f"{t} logloss": format(loss[t], spec) for t in TASKS})

    trees = result["trees"]
    rows = [row("HistGradientBoosting (sklearn, same columns)",
                {t: trees[t]["test"]["auc"] for t in TASKS},
                {t: trees[t]["test"]["logloss"] for t in TASKS}, ".4f")]
    for r in result["mmoe"]:
        mark = " (best on valid)" if r["variant"] == result["best_on_valid"] else ""
        rows.append(row(f"mmoe, numeric_encoding {r['variant'].removeprefix('census-')}{mark}",
                        {t: r["tasks"][t]["auc"] for t in TASKS},
                        {t: r["tasks"][t]["logloss"] for t in TASKS}, ".4f"))
    best = next(r for r in result["mmoe"] if r["variant"] == result["best_on_valid"])
    rows.append(row("best mmoe - trees",
                    {t: best["tasks"][t]["auc"] - trees[t]["test"]["auc"] for t in TASKS},
                    {t: best["tasks"][t]["logloss"] - trees[t]["test"]["logloss"] for t in TASKS},
                    "+.4f"))
    return rows


def table(result: dict[str, Any]) -> str:
    """The rows as Markdown, for the docs."""
    return format_table(table_rows(result), markdown=True)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("census", __doc__, overrides=True, json_default="runs/bench-census.json",
                          out_alias=True)
    parser.add_argument("--src", default=DEFAULT_SRC)
    parser.add_argument("--root", default="data/census", help="where the split is prepared")
    parser.add_argument("--encodings", default=",".join(ENCODINGS),
                        help="comma-separated numeric encodings to train")
    args = parse(parser, argv)
    config = str(Path(args.root) / "census.yaml")
    encodings = args.encodings.split(",")
    return run_bench(lambda: write_results(
        args, bench(args.src, args.root, config, args.overrides, encodings)))


if __name__ == "__main__":
    sys.exit(main())
