"""Census-Income (KDD): MMoE with each numeric encoding against gradient-boosted trees on the
same split (issue #16, item 3).

Prepares the split (``recmtl prepare-census``: 60/20/20 by a stable hash, vocabularies and
numeric statistics from train), trains MMoE (``data/census/census.yaml``: 8 experts, 12
epochs, 2 Ray workers) with ``model.numeric_encoding`` none, piecewise_linear and periodic,
each a real `recmtl train` run, and fits scikit-learn's ``HistGradientBoostingClassifier`` per
task on the same prepared columns (id columns as categorical features, the dense floats as
they are) in the same process. Prints test AUC and logloss per task for every model, marks
the MMoE variant with the best mean validation AUC (chosen without the test split) and
writes the raw numbers to ``--out``.

    python -m pipelines.bench.census
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.dataset as ds

from pipelines.bench.quality import run_variant
from pipelines.cli import run_guarded
from pipelines.feature_store.census import CATEGORICAL, DEFAULT_SRC, NUMERIC, prepare
from recmtl.logs import quiet_third_party

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


def bench(src: str, root: str, config: str, overrides: list[str], out: str,
          encodings: list[str]) -> dict[str, Any]:
    prepare(src, root)
    trees = gradient_boosting(Path(root))
    print("hist_gradient_boosting  " + "  ".join(
        f"{t} test AUC {trees[t]['test']['auc']:.4f} (valid {trees[t]['valid']['auc']:.4f})"
        for t in TASKS), flush=True)
    mmoe = []
    for name in encodings:
        r = run_variant(config, f"census-{name}", ENCODINGS[name], overrides)
        mmoe.append(r)
        print(f"mmoe {name:18s} " + "  ".join(
            f"{t} test AUC {r['tasks'][t]['auc']:.4f} (valid {r['valid'].get(f'valid/auc_{t}', 0):.4f})"
            for t in TASKS), flush=True)
    best = max(mmoe, key=lambda r: np.mean([r["valid"].get(f"valid/auc_{t}", 0) for t in TASKS]))
    result = {"config": config, "trees": trees, "mmoe": mmoe, "best_on_valid": best["variant"]}
    result["table"] = table(result)
    print(result["table"])
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result


def table(result: dict[str, Any]) -> str:
    """Markdown: one row per model, test AUC and logloss per task, then MMoE (best) - trees."""
    head = ["model", *[f"{t} AUC" for t in TASKS], *[f"{t} logloss" for t in TASKS]]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    trees = result["trees"]
    lines.append("| HistGradientBoosting (sklearn, same columns) | "
                 + " | ".join(f"{trees[t]['test']['auc']:.4f}" for t in TASKS) + " | "
                 + " | ".join(f"{trees[t]['test']['logloss']:.4f}" for t in TASKS) + " |")
    for r in result["mmoe"]:
        mark = " (best on valid)" if r["variant"] == result["best_on_valid"] else ""
        name = r["variant"].removeprefix("census-")
        lines.append(f"| mmoe, numeric_encoding {name}{mark} | "
                     + " | ".join(f"{r['tasks'][t]['auc']:.4f}" for t in TASKS) + " | "
                     + " | ".join(f"{r['tasks'][t]['logloss']:.4f}" for t in TASKS) + " |")
    best = next(r for r in result["mmoe"] if r["variant"] == result["best_on_valid"])
    lines.append("| best mmoe - trees | " + " | ".join(
        f"{best['tasks'][t]['auc'] - trees[t]['test']['auc']:+.4f}" for t in TASKS) + " | "
        + " | ".join(f"{best['tasks'][t]['logloss'] - trees[t]['test']['logloss']:+.4f}"
                     for t in TASKS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.bench.census",
                                     description="MMoE numeric encodings vs gradient-boosted "
                                     "trees on Census-Income (KDD)")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value for every MMoE run")
    parser.add_argument("--src", default=DEFAULT_SRC)
    parser.add_argument("--root", default="data/census", help="where the split is prepared")
    parser.add_argument("--encodings", default=",".join(ENCODINGS),
                        help="comma-separated numeric encodings to train")
    parser.add_argument("--out", default="runs/bench-census.json")
    args = parser.parse_intermixed_args(argv)
    quiet_third_party()
    config = str(Path(args.root) / "census.yaml")
    encodings = args.encodings.split(",")
    return run_guarded(lambda: bench(args.src, args.root, config, args.overrides, args.out,
                                     encodings), prog="bench")


if __name__ == "__main__":
    sys.exit(main())
