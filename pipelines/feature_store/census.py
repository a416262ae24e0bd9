"""Census-Income (KDD) -> a recmtl feature store, with polars (lazy).

The classic two-task benchmark of the MMoE and PLE papers: ``income`` (income_50k is
"50000+.") and ``marital`` (marital_stat is "Never married", which is then dropped from the
inputs). Rows are split 60/20/20 by a stable hash of their index. Every categorical column
becomes an id column with a vocabulary fit on the train split alone (id 0 = a value never seen
in train); numeric columns become ``log1p`` then standardised floats (statistics from train).
Writes ``OUT/{train,valid,test}/part-00000.parquet``, ``OUT/stats.json`` (vocabularies,
cardinalities, null-free counts, numeric statistics) and ``OUT/census.yaml``: a ready config
whose embedding tables are sized from the vocabularies.

    recmtl prepare-census [--src ../shared/data/census-income-kdd/census-income.test.gz]
    recmtl train data/census/census.yaml
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml

COLUMNS = (
    "age class_worker det_ind_code det_occ_code education wage_per_hour hs_college marital_stat "
    "major_ind_code major_occ_code race hisp_origin sex union_member unemp_reason "
    "full_or_part_emp capital_gains capital_losses stock_dividends tax_filer_stat "
    "region_prev_res state_prev_res det_hh_fam_stat det_hh_summ instance_weight mig_chg_msa "
    "mig_chg_reg mig_move_reg mig_same mig_prev_sunbelt num_emp fam_under_18 country_father "
    "country_mother country_self citizenship own_or_self vet_question vet_benefits "
    "weeks_worked year income_50k"
).split()
NUMERIC = ("age", "wage_per_hour", "capital_gains", "capital_losses", "stock_dividends",
           "num_emp", "weeks_worked")
NOT_FEATURES = ("marital_stat", "income_50k", "instance_weight")
CATEGORICAL = tuple(c for c in COLUMNS if c not in NUMERIC + NOT_FEATURES)
DEFAULT_SRC = "../shared/data/census-income-kdd/census-income.test.gz"
SPLITS = {"train": (0, 60), "valid": (60, 80), "test": (80, 100)}


def split_bucket(index: np.ndarray) -> np.ndarray:
    """A stable 0..99 bucket per row index (splitmix64), independent of row order or library."""
    z = index.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z % np.uint64(100)).astype(np.int64)


def load_raw(src: str | Path) -> pl.LazyFrame:
    raw = pl.read_csv(src, has_header=False, new_columns=COLUMNS, infer_schema=False)
    if raw.width != len(COLUMNS):
        raise ValueError(f"{src}: expected {len(COLUMNS)} columns, found {raw.width}")
    bucket = split_bucket(np.arange(raw.height))
    return (raw.lazy()
            .with_columns(pl.all().str.strip_chars())
            .with_columns(pl.Series("row_id", np.arange(raw.height, dtype=np.int64)),
                          pl.Series("bucket", bucket)))


def prepare(src: str | Path = DEFAULT_SRC, out: str | Path = "data/census",
            base_config: str | Path = "configs/census.yaml") -> dict[str, Any]:
    src, out = Path(src), Path(out)
    if not src.exists():
        raise FileNotFoundError(f"{src}: the Census-Income (KDD) file is not here "
                                "(it lives in ../shared/data; the main job does not need it)")
    frame = load_raw(src).with_columns(
        (pl.col("income_50k") == "50000+.").cast(pl.Int8).alias("income"),
        (pl.col("marital_stat") == "Never married").cast(pl.Int8).alias("marital"),
        *[pl.col(c).cast(pl.Float64).log1p().alias(c) for c in NUMERIC],
    )
    lo, hi = SPLITS["train"]
    train = frame.filter(pl.col("bucket").is_between(lo, hi - 1, closed="both")).collect()
    vocab = {c: train[c].value_counts(sort=True)[c].to_list() for c in CATEGORICAL}
    moments = {c: _moments(train[c].to_numpy()) for c in NUMERIC}
    encoded = frame.with_columns(
        # id 0 is reserved for values never seen in train
        *[pl.col(c).replace_strict(v, list(range(1, len(v) + 1)), default=0,
                                   return_dtype=pl.Int64).alias(c) for c, v in vocab.items()],
        *[((pl.col(c) - m) / s).cast(pl.Float32).alias(c) for c, (m, s) in moments.items()],
    ).select("row_id", "bucket", *CATEGORICAL, *NUMERIC, "income", "marital")
    counts = {}
    for split, (lo, hi) in SPLITS.items():
        part = encoded.filter(pl.col("bucket").is_between(lo, hi - 1, closed="both")).drop(
            "bucket").collect()
        (out / split).mkdir(parents=True, exist_ok=True)
        part.write_parquet(out / split / "part-00000.parquet", row_group_size=16384)
        counts[split] = {"rows": part.height,
                         "income_rate": float(part["income"].to_numpy().mean()),
                         "marital_rate": float(part["marital"].to_numpy().mean()),
                         "unseen_ids": int(sum((part[c] == 0).sum() for c in CATEGORICAL))}
    stats = {"source": str(src), "splits": counts,
             "cardinalities": {c: len(v) + 1 for c, v in vocab.items()},
             "vocabularies": vocab, "numeric": {c: {"log1p_mean": m, "log1p_std": s}
                                                for c, (m, s) in moments.items()}}
    (out / "stats.json").write_text(json.dumps(stats, indent=1))
    config = {
        "base": str(Path(base_config).resolve()),
        "data": {"root": str(out.resolve())},
        "features": {
            "tables": [{"name": c, "num_embeddings": len(vocab[c]) + 1, "dim": 8}
                       for c in CATEGORICAL],
            "sparse": [{"name": c, "table": c} for c in CATEGORICAL],
            "dense": list(NUMERIC),
        },
    }
    (out / "census.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    for split, c in counts.items():
        print(f"{split}: {c['rows']:,} rows, income {c['income_rate']:.3f}, "
              f"marital {c['marital_rate']:.3f}, ids unseen in train {c['unseen_ids']}")
    print(f"wrote {out}/{{train,valid,test}}, stats.json and census.yaml")
    return stats


def _moments(x: np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation (1 for a constant column, which then maps to 0)."""
    std = float(x.std(ddof=1)) if len(x) > 1 else 0.0
    return float(x.mean()), std or 1.0
