"""The Census-Income (KDD) pipeline: on a small census-format CSV written here (every run),
and on the real file when ../shared has it."""

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.feature_store.census import (
    CATEGORICAL,
    COLUMNS,
    DEFAULT_SRC,
    NUMERIC,
    prepare,
    split_bucket,
)
from recmtl.config import load_config

needs_data = pytest.mark.skipif(not Path(DEFAULT_SRC).exists(), reason="no ../shared census file")
RECMTL = str(Path(sys.executable).with_name("recmtl"))
ROWS = 300


def _splitmix64_bucket(i: int) -> int:  # independent pure-Python reference
    mask = (1 << 64) - 1
    z = (i + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return (z ^ (z >> 31)) % 100


def census_rows(n=ROWS, seed=0):
    """``n`` rows in the real layout: 42 fields, values as the README describes them."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        row = {}
        for c in COLUMNS:
            if c in NUMERIC:
                row[c] = str(int(rng.integers(0, 90 if c == "age" else 5000)))
            elif c == "instance_weight":
                row[c] = f"{rng.uniform(100, 3000):.2f}"
            elif c == "income_50k":
                row[c] = "50000+." if rng.random() < 0.2 else "- 50000."
            elif c == "marital_stat":
                row[c] = ["Never married", "Married-civilian spouse present",
                          "Divorced"][int(rng.integers(0, 3))]
            else:  # a skewed category, so some values appear only outside train
                row[c] = "?" if i % 11 == 0 else f"{c}-{int(rng.zipf(2.0)) % 40}"
        rows.append(row)
    return rows


def write_census(path, rows):
    text = "\n".join(", ".join(r[c] for c in COLUMNS) for r in rows) + "\n"
    with gzip.open(path, "wt") as f:
        f.write(text)
    return path


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("census-small")
    rows = census_rows()
    stats = prepare(write_census(tmp / "census.csv.gz", rows), tmp / "out")
    return rows, stats, tmp / "out"


def test_split_is_a_stable_hash():
    idx = np.array([0, 1, 2, 99761, 123456789])
    assert split_bucket(idx).tolist() == [_splitmix64_bucket(int(i)) for i in idx]


def test_small_file_labels_vocabularies_and_unseen_counts(small):
    rows, stats, out = small
    split_of = ["train" if b < 60 else "valid" if b < 80 else "test"
                for b in (_splitmix64_bucket(i) for i in range(len(rows)))]
    for c in CATEGORICAL:  # reference: train frequencies, ties in first-seen order
        train = [r[c] for r, s in zip(rows, split_of, strict=True) if s == "train"]
        assert set(stats["vocabularies"][c]) == set(train)
        counts = [train.count(v) for v in stats["vocabularies"][c]]
        assert counts == sorted(counts, reverse=True)
    for split in ("train", "valid", "test"):
        part = pq.read_table(out / split / "part-00000.parquet").to_pydict()
        mine = [i for i, s in enumerate(split_of) if s == split]
        assert part["row_id"] == mine and stats["splits"][split]["rows"] == len(mine)
        assert part["income"] == [int(rows[i]["income_50k"] == "50000+.") for i in mine]
        assert part["marital"] == [int(rows[i]["marital_stat"] == "Never married") for i in mine]
        unseen = {}
        for c in CATEGORICAL:
            vocab = set(stats["vocabularies"][c])
            n = sum(rows[i][c] not in vocab for i in mine)
            if n:
                unseen[f"unseen_to_oov/{c}"] = n
            assert sum(v == 0 for v in part[c]) == n
        assert stats["splits"][split]["policy_counts"] == unseen
    assert sum(stats["splits"]["test"]["policy_counts"].values()) > 0  # the test can fail
    assert stats["rows_in"] == len(rows)
    assert stats["tables"]["class_worker"]["size"] == stats["cardinalities"]["class_worker"]
    assert json.loads((out / "stats.json").read_text()) == stats


def test_census_stats_go_to_mlflow(small, tmp_path):
    import mlflow

    from recmtl.train.tracking import log_data_stats

    _, stats, out = small
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        with mlflow.start_run() as run:
            log_data_stats(str(out))
        client = mlflow.tracking.MlflowClient()
        metrics = client.get_run(run.info.run_id).data.metrics
        artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "data")]
    finally:
        mlflow.set_tracking_uri(None)
    expected = {}
    for split, s in stats["splits"].items():
        expected[f"data/{split}/rows"] = s["rows"]
        expected |= {f"data/{split}/{k}": v for k, v in s["policy_counts"].items()}
    assert metrics == expected and len(expected) > 3
    assert artifacts == ["data/stats.json"]


def test_prepare_census_command_and_its_errors(tmp_path):
    src = write_census(tmp_path / "ok.csv.gz", census_rows(n=50))
    r = subprocess.run([RECMTL, "prepare-census", "--src", str(src), "--out",
                        str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "census.yaml").exists()
    bad_age = census_rows(n=50)
    bad_age[7]["age"] = "forty"
    short = tmp_path / "short.csv.gz"
    with gzip.open(short, "wt") as f:
        f.write("1, 2, 3\n")
    cases = {
        write_census(tmp_path / "age.csv.gz", bad_age):
            "column 'age': 1 row(s) hold something else than a finite number >= 0 "
            "(first at row 7: 'forty')",
        short: "3 fields per row; expected the 42 Census-Income (KDD) columns",
        tmp_path / "nope.csv.gz": "the Census-Income (KDD) file is not here",
    }
    for path, message in cases.items():
        r = subprocess.run([RECMTL, "prepare-census", "--src", str(path), "--out",
                            str(tmp_path / "bad")], capture_output=True, text=True, timeout=300)
        lines = r.stderr.splitlines()
        assert r.returncode == 2 and len(lines) == 1, r.stderr
        assert lines[0].startswith(f"recmtl: error: {path}: {message}"), lines[0]


@pytest.fixture(scope="module")
def census(tmp_path_factory):
    out = tmp_path_factory.mktemp("census")
    stats = prepare(DEFAULT_SRC, out)
    tables = {s: pq.read_table(out / s / "part-00000.parquet").to_pandas()
              for s in ("train", "valid", "test")}
    return out, stats, tables


@needs_data
def test_rows_labels_and_no_leakage(census):
    _, stats, t = census
    ids = [set(df["row_id"]) for df in t.values()]
    assert sum(len(s) for s in ids) == 99_762  # every row once
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert abs(len(ids[0]) / 99_762 - 0.6) < 0.01
    both = {k: np.concatenate([df[k].to_numpy() for df in t.values()]) for k in ("income",
                                                                                  "marital")}
    assert both["income"].mean() == pytest.approx(0.062, abs=0.001)  # README: 6.2%
    assert both["marital"].mean() == pytest.approx(0.432, abs=0.001)  # README: 43.2%


@needs_data
def test_vocabularies_and_statistics_come_from_train_only(census):
    out, stats, t = census
    for c in CATEGORICAL:
        assert t["train"][c].min() >= 1  # every train value is in the vocabulary
        assert t["train"][c].max() == stats["cardinalities"][c] - 1
        for split in ("valid", "test"):
            assert t[split][c].max() < stats["cardinalities"][c]
    for c in NUMERIC:
        assert t["train"][c].mean() == pytest.approx(0.0, abs=1e-3)
        assert t["train"][c].std() == pytest.approx(1.0, abs=1e-3)
    cfg = load_config(out / "census.yaml")
    assert {x.name: x.num_embeddings for x in cfg.features.tables} == stats["cardinalities"]
    assert [t.name for t in cfg.tasks] == ["income", "marital"]
    assert "marital_stat" not in [f.name for f in cfg.features.sparse]  # the label's source


@needs_data
def test_real_census_stats_go_to_mlflow(census, tmp_path):
    import mlflow

    from recmtl.train.tracking import log_data_stats

    out, stats, _ = census
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        with mlflow.start_run() as run:
            log_data_stats(str(out))  # was: KeyError: 'policy_counts'
        metrics = mlflow.tracking.MlflowClient().get_run(run.info.run_id).data.metrics
    finally:
        mlflow.set_tracking_uri(None)
    assert {k: v for k, v in metrics.items() if k.endswith("/rows")} == {
        f"data/{s}/rows": len(df) for s, df in census[2].items()}
    assert metrics["data/valid/unseen_to_oov/" + next(
        k.split("/")[1] for k in stats["splits"]["valid"]["policy_counts"])] >= 1
