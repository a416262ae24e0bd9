"""Census-Income (KDD) -> a recmtl feature store, with polars (lazy).

The classic two-task benchmark of the MMoE and PLE papers: ``income`` (income_50k is
"50000+.") and ``marital`` (marital_stat is "Never married", which is then dropped from the
inputs). Rows are split 60/20/20 by a stable hash of their index. Every categorical column
becomes an id column with a vocabulary fit on the train split alone (id 0 = a value never seen
in train); numeric columns become ``log1p`` then standardised floats (statistics from train).
Writes ``OUT/{train,valid,test}/part-00000.parquet``, ``OUT/stats.json`` (the shape `recmtl
prepare` writes: rows, ``policy_counts`` (``unseen_to_oov/<feature>``: values unseen in train)
and null rates per split, ``tables``, ``dense``; plus cardinalities, vocabularies and the
numeric statistics) and ``OUT/census.yaml``: a ready config whose embedding tables are sized
from the vocabularies. A file that is not the Census layout (a row with another number of
fields, a numeric column with text, a negative or missing number, an income label other than
"- 50000." or "50000+.") stops the job with the file, column and first row.

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

from recmtl.errors import DataError

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
INCOME_VALUES = ("- 50000.", "50000+.")


def split_bucket(index: np.ndarray) -> np.ndarray:
    """A stable 0..99 bucket per row index (splitmix64), independent of row order or library."""
    z = index.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z % np.uint64(100)).astype(np.int64)


def load_raw(src: str | Path) -> pl.LazyFrame:
    """The CSV as stripped text columns, with ``row_id`` and the split ``bucket``."""
    try:
        raw = pl.read_csv(src, has_header=False, infer_schema=False)
    except (pl.exceptions.PolarsError, OSError) as e:
        raise DataError(f"{src}: not a readable Census-Income CSV ({_first_line(e)}); expected "
                        f"{len(COLUMNS)} comma-separated fields per row, no header") from e
    if raw.width != len(COLUMNS):
        raise DataError(f"{src}: {raw.width} fields per row; expected the {len(COLUMNS)} "
                        "Census-Income (KDD) columns (see the README beside the data)")
    if raw.height == 0:
        raise DataError(f"{src}: no rows")
    bucket = split_bucket(np.arange(raw.height))
    return (raw.rename(dict(zip(raw.columns, COLUMNS, strict=True))).lazy()
            .with_columns(pl.all().str.strip_chars())
            .with_columns(pl.Series("row_id", np.arange(raw.height, dtype=np.int64)),
                          pl.Series("bucket", bucket)))


def check_raw(frame: pl.LazyFrame, src: str | Path) -> None:
    """Numbers where the layout has numbers (finite, >= 0: counts and amounts), and an income
    label that is one of its two values; one pass."""
    checks = {c: pl.col(c).cast(pl.Float64, strict=False) for c in NUMERIC}
    bad = {c: x.is_null() | ~x.is_finite() | (x < 0) for c, x in checks.items()}
    bad["income_50k"] = ~pl.col("income_50k").is_in(INCOME_VALUES) | pl.col(
        "income_50k").is_null()
    counts = frame.select([b.sum().alias(c) for c, b in bad.items()]).collect().row(0, named=True)
    for col, count in counts.items():
        if count:
            row, value = frame.filter(bad[col]).select("row_id", col).head(1).collect().row(0)
            expected = (f"one of {INCOME_VALUES}" if col == "income_50k"
                        else "a finite number >= 0")
            raise DataError(f"{src}: column {col!r}: {count} row(s) hold something else than "
                            f"{expected} (first at row {row}: {value!r})")


def prepare(src: str | Path = DEFAULT_SRC, out: str | Path = "data/census",
            base_config: str | Path = "configs/census.yaml") -> dict[str, Any]:
    src, out = Path(src), Path(out)
    if not src.is_file():
        raise DataError(f"{src}: the Census-Income (KDD) file is not here (it lives in "
                        "../shared/data/census-income-kdd/; pass --src)")
    raw = load_raw(src)
    check_raw(raw, src)
    frame = raw.with_columns(
        (pl.col("income_50k") == "50000+.").cast(pl.Int8).alias("income"),
        (pl.col("marital_stat") == "Never married").cast(pl.Int8).alias("marital"),
        *[pl.col(c).cast(pl.Float64).log1p().alias(c) for c in NUMERIC],
    )
    lo, hi = SPLITS["train"]
    train = frame.filter(pl.col("bucket").is_between(lo, hi - 1, closed="both")).collect()
    if train.height == 0:
        raise DataError(f"{src}: no row falls in the train split (60% of the rows by a stable "
                        "hash); the file is too small")
    vocab = {c: train[c].value_counts(sort=True)[c].to_list() for c in CATEGORICAL}
    moments = {c: _moments(train[c].to_numpy()) for c in NUMERIC}
    encoded = frame.with_columns(
        # id 0 is reserved for values never seen in train
        *[pl.col(c).replace_strict(v, list(range(1, len(v) + 1)), default=0,
                                   return_dtype=pl.Int64).alias(c) for c, v in vocab.items()],
        *[((pl.col(c) - m) / s).cast(pl.Float32).alias(c) for c, (m, s) in moments.items()],
    ).select("row_id", "bucket", *CATEGORICAL, *NUMERIC, "income", "marital")
    counts: dict[str, dict[str, Any]] = {}
    for split, (lo, hi) in SPLITS.items():
        part = encoded.filter(pl.col("bucket").is_between(lo, hi - 1, closed="both")).drop(
            "bucket").collect()
        (out / split).mkdir(parents=True, exist_ok=True)
        part.write_parquet(out / split / "part-00000.parquet", row_group_size=16384)
        unseen = {f"unseen_to_oov/{c}": int((part[c] == 0).sum()) for c in CATEGORICAL}
        counts[split] = {"rows": part.height,
                         "policy_counts": {k: v for k, v in unseen.items() if v},
                         "null_rates": {},  # checked above: the layout has no nulls
                         "income_rate": _rate(part["income"]),
                         "marital_rate": _rate(part["marital"]),
                         "unseen_ids": sum(unseen.values())}
    stats = {"name": "census", "source": str(src), "files": [str(src)], "splits": counts,
             "rows_in": sum(int(c["rows"]) for c in counts.values()),
             "tables": {c: {"transform": "vocab", "size": len(v) + 1, "min_count": 1}
                        for c, v in vocab.items()},
             "dense": {c: {"mean": m, "std": s} for c, (m, s) in moments.items()},
             "type_casts": {},
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


def _rate(labels: pl.Series) -> float:
    return float(labels.to_numpy().mean()) if len(labels) else 0.0


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _moments(x: np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation (1 for a constant column, which then maps to 0)."""
    std = float(x.std(ddof=1)) if len(x) > 1 else 0.0
    return float(x.mean()), std or 1.0
