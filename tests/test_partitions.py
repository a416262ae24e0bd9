"""Day-partitioned raw exports (``pipelines/feature_store/partitions.py``): Hive partitions
``<key>=<date>/`` with several part files and writer markers, and the older ``day-NNNN.parquet``
files; `recmtl prepare` and the daily job's preparation on them, locally and on the S3 test
server, each against the same rows written as one file (or one file a day)."""

import datetime as dt
import uuid
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipelines.cli import main
from pipelines.feature_store.partitions import check_days, find_days, read_rows
from pipelines.feature_store.prepare import SPLITS, prepare
from pipelines.jobs.daily import prepare_day, window
from pipelines.synthetic.store import generate
from recmtl.config import load_config
from recmtl.errors import DataError
from recmtl.storage import upload_dir
from tests.raw_export import raw_columns, write_spec
from tests.s3_server import create_bucket, s3_env, s3_server

DAILY = "configs/daily/daily.yaml"


def _write_hive(root, table, time_column, key="dt", spell=None, extra=None):
    """One partition a day of ``time_column``, each day's rows in two part files (in row
    order), a ``_SUCCESS`` marker and a hidden checksum beside them. ``spell(date)`` names the
    partition's value; ``extra(date, part)`` may add columns to a part file."""
    dates = pc.floor_temporal(table.column(time_column), unit="day").to_pylist()
    root.mkdir(parents=True)
    for day in sorted(set(dates)):
        rows = table.filter(pa.array([d == day for d in dates]))
        folder = root / f"{key}={(spell or dt.date.isoformat)(day.date())}"
        folder.mkdir()
        half = rows.num_rows // 2
        for i, part in enumerate((rows.slice(0, half), rows.slice(half))):
            if extra:
                part = extra(day.date(), part)
            pq.write_table(part, folder / f"part-{i:05d}-a1b2.snappy.parquet")
        (folder / "_SUCCESS").write_bytes(b"")
        (folder / ".part-00000-a1b2.snappy.parquet.crc").write_bytes(b"crc")
    return root


def _empty_parquet(path, schema):
    pq.write_table(schema.empty_table(), path)


def _prepared(out):
    return {s: pl.read_parquet(out / s / "*.parquet") for s in SPLITS}


@pytest.fixture(scope="module")
def raw():
    return pa.table(raw_columns())  # 400 rows over 10 days from 2026-11-01


def test_finds_hive_days_in_date_order_with_their_part_files(tmp_path, raw):
    spelled = {dt.date(2026, 11, 1): "20261101"}  # sorts after 2026-11-02.. as text
    root = _write_hive(tmp_path / "events", raw, "ts",
                       spell=lambda d: spelled.get(d, d.isoformat()))
    days = find_days(str(root))
    assert [d.label for d in days] == [f"2026-11-{i:02d}" for i in range(1, 11)]
    assert days[0].name == "dt=20261101" and days[1].name == "dt=2026-11-02"
    assert [d.number for d in days] == list(range(days[0].number, days[0].number + 10))
    assert days[0].date == dt.date(2026, 11, 1) and days[0].key == "dt"
    assert days[3].files == (str(root / "dt=2026-11-04" / "part-00000-a1b2.snappy.parquet"),
                             str(root / "dt=2026-11-04" / "part-00001-a1b2.snappy.parquet"))
    check_days(days, str(root))
    rows = pa.concat_tables([read_rows(d) for d in days])
    assert rows.equals(raw)  # every row once, in date then part-file order


def test_the_key_repeated_in_rows_is_not_read_as_a_column(tmp_path, raw):
    """Some writers repeat the key in each file, here as text on some days and as an int on
    others; with an unused column too. Nothing needs them: `recmtl prepare` reads the same rows
    as from one file, and the day's rows leave the key out."""
    def extra(date, part):
        key = (pa.array([date.isoformat()] * part.num_rows) if date.day % 2 else
               pa.array([int(date.strftime("%Y%m%d"))] * part.num_rows, pa.int32()))
        return part.append_column("day", key).append_column("ingest_batch", pa.array(
            [date.day] * part.num_rows, pa.int64()))

    root = _write_hive(tmp_path / "events", raw, "ts", key="day", extra=extra)
    days = find_days(str(root))
    assert days[0].key == "day"
    assert read_rows(days[1]).column_names == [*raw.column_names, "ingest_batch"]
    single = tmp_path / "one"
    single.mkdir()
    pq.write_table(raw, single / "all.parquet", row_group_size=64)
    hive_stats = prepare(write_spec(tmp_path, root, output=str(tmp_path / "hive")))
    one_stats = prepare(write_spec(tmp_path, single, output=str(tmp_path / "single")))
    assert hive_stats["splits"] == one_stats["splits"] and hive_stats["rows_in"] == 400
    assert len(hive_stats["files"]) == 20
    for split, frame in _prepared(tmp_path / "hive").items():
        assert frame.equals(_prepared(tmp_path / "single")[split]), split


def test_cli_prepare_on_hive_days_in_date_order_matches_one_file(tmp_path, raw):
    """Row order matters (a hash split without a column hashes the row's position): days
    spelled two ways sort by date, not as text."""
    root = _write_hive(tmp_path / "events", raw, "ts",
                       spell=lambda d: d.strftime("%Y%m%d") if d.day < 5 else d.isoformat())
    single = tmp_path / "one.parquet"
    pq.write_table(raw, single)
    hash_split = {"kind": "hash", "valid_fraction": 0.2, "test_fraction": 0.2}
    write_spec(tmp_path, single, output=str(tmp_path / "single"), split=hash_split)
    assert main(["prepare", str(tmp_path / "spec.yaml")]) == 0
    write_spec(tmp_path, root, output=str(tmp_path / "hive"), split=hash_split)
    assert main(["prepare", str(tmp_path / "spec.yaml")]) == 0
    hive, one = _prepared(tmp_path / "hive"), _prepared(tmp_path / "single")
    assert {s: len(f) for s, f in hive.items()} == {s: len(f) for s, f in one.items()}
    assert min(len(f) for f in hive.values()) > 40
    for split in SPLITS:
        assert hive[split].equals(one[split]), split


def test_a_picked_day_reads_only_its_files(tmp_path, raw):
    root = _write_hive(tmp_path / "events", raw, "ts")
    stats = prepare(write_spec(tmp_path, root, days=["2026-11-03", "20261104"],
                               split={"kind": "time", "column": "ts",
                                      "valid_from": "2026-11-04 12:00:00",
                                      "test_from": "2026-11-05"}))
    ts = raw.column("ts").to_pylist()
    expected = sum(dt.datetime(2026, 11, 3) <= t < dt.datetime(2026, 11, 5) for t in ts)
    assert stats["rows_in"] == expected > 0 and len(stats["files"]) == 4
    assert stats["splits"]["test"]["rows"] == 0
    with pytest.raises(DataError, match=r"no day '2026-11-21'; the export holds 2026-11-01 .. "
                                        r"2026-11-10"):
        prepare(write_spec(tmp_path, root, days=["2026-11-21"]))


def _error(root):
    with pytest.raises(DataError) as e:
        days = find_days(str(root))
        assert days is not None
        check_days(days, str(root))
    return str(e.value)


def test_a_missing_or_empty_day_is_named(tmp_path, raw):
    root = _write_hive(tmp_path / "gap", raw, "ts")
    for f in (root / "dt=2026-11-05").iterdir():
        f.unlink()
    (root / "dt=2026-11-05").rmdir()
    assert _error(root) == (f"{root}: day dt=2026-11-05 is missing (between dt=2026-11-04 and "
                            "dt=2026-11-06); expected one for every day")
    with pytest.raises(DataError, match="day dt=2026-11-05 is missing"):
        prepare(write_spec(tmp_path, root))

    root = _write_hive(tmp_path / "markers", raw, "ts")
    for f in (root / "dt=2026-11-07").glob("*.parquet"):
        f.unlink()  # only _SUCCESS and the hidden checksum are left
    assert _error(root) == (f"{root}/dt=2026-11-07: the partition has no Parquet part files; "
                            "expected at least one file with rows for every day")

    root = _write_hive(tmp_path / "zero", raw, "ts")
    for f in (root / "dt=2026-11-02").glob("*.parquet"):
        _empty_parquet(f, raw.schema)
    assert _error(root) == (f"{root}/dt=2026-11-02: the partition's 2 Parquet file(s) hold no "
                            "rows; expected rows for every day")


def test_malformed_layouts_are_named(tmp_path, raw):
    root = _write_hive(tmp_path / "keys", raw, "ts")
    (root / "dt=2026-11-10").rename(root / "date=2026-11-10")
    assert "partitions of more than one key (date, dt)" in _error(root)

    root = _write_hive(tmp_path / "value", raw, "ts")
    (root / "dt=2026-11-10").rename(root / "dt=latest")
    assert _error(root) == (f"{root}/dt=latest: partition value 'latest' is not a date; "
                            "expected dt=YYYY-MM-DD or dt=YYYYMMDD")

    root = _write_hive(tmp_path / "stray", raw, "ts")
    pq.write_table(raw.slice(0, 3), root / "extra.parquet")
    assert "'extra.parquet' is not a <key>=<date>/ partition" in _error(root)

    root = _write_hive(tmp_path / "csv", raw, "ts")
    (root / "dt=2026-11-03" / "part-00002.csv").write_text("a,b\n")
    assert _error(root).startswith(f"{root}/dt=2026-11-03/part-00002.csv: not a Parquet part "
                                   "file")


@pytest.fixture(scope="module")
def synthetic_days(tmp_path_factory):
    """Three small days of the synthetic daily export, one file a day, and the same rows as
    Hive partitions (``day=2026-01-01/`` ..., two part files each)."""
    root = tmp_path_factory.mktemp("days")
    overrides = [f"data.root={root / 'data'}", "synthetic.days=3", "synthetic.rows_per_day=1500",
                 "synthetic.num_users=300", "synthetic.num_items=120",
                 "synthetic.num_categories=8", f"daily.raw={root / 'data' / 'raw'}",
                 f"daily.work_dir={root / 'work'}", "daily.days=2"]
    generate(load_config(DAILY, overrides))
    rows = pa.concat_tables([pq.read_table(root / "data" / "raw" / f"day-{d:04d}.parquet")
                             for d in range(3)])
    _write_hive(root / "hive", rows, "event_time", key="day")
    return root, overrides


def _prepare_first_day(cfg, work):
    day = window(cfg, cfg_dir())[0]
    spec = cfg_dir() / cfg.daily.spec
    return day, prepare_day(day, spec, DAILY, work, None, cfg.daily.valid_hours)


def cfg_dir():
    return Path(DAILY).resolve().parent


def test_daily_window_on_hive_days_prepares_as_one_file_a_day(synthetic_days, tmp_path):
    root, overrides = synthetic_days
    legacy = load_config(DAILY, overrides)
    hive = load_config(DAILY, [*overrides, f"daily.raw={root / 'hive'}"])
    assert [(d.index, d.name, d.raw.name) for d in window(legacy, cfg_dir())] == [
        (0, "day-0000", "day-0000.parquet"), (1, "day-0001", "day-0001.parquet")]
    assert [(d.index, d.name, d.raw.name, d.next_raw.name) for d in window(hive, cfg_dir())] == [
        (0, "2026-01-01", "day=2026-01-01", "day=2026-01-02"),
        (1, "2026-01-02", "day=2026-01-02", "day=2026-01-03")]
    late = load_config(DAILY, [*overrides, f"daily.raw={root / 'hive'}", "daily.days=1",
                               "daily.first_date=2026-01-02"])
    assert [(d.index, d.name) for d in window(late, cfg_dir())] == [(1, "2026-01-02")]
    too_long = load_config(DAILY, [*overrides, f"daily.raw={root / 'hive'}", "daily.days=3"])
    with pytest.raises(DataError, match="the window from 2026-01-01 needs 4 days"):
        window(too_long, cfg_dir())

    _, old = _prepare_first_day(legacy, tmp_path / "legacy")
    day, new = _prepare_first_day(hive, tmp_path / "hive")
    assert new == tmp_path / "hive" / "2026-01-01" / "data"
    assert read_rows(day.next_raw).equals(pq.read_table(root / "data" / "raw" / "day-0001.parquet"))
    for split, frame in _prepared(old).items():
        assert frame.equals(_prepared(new)[split]), split


def test_daily_and_prepare_read_hive_days_from_s3(synthetic_days, tmp_path, monkeypatch, raw):
    root, overrides = synthetic_days
    with s3_server() as endpoint:
        for k, v in s3_env(endpoint).items():
            monkeypatch.setenv(k, v)
        bucket = f"recmtl-{uuid.uuid4().hex[:12]}"
        create_bucket(bucket)
        upload_dir(root / "hive", f"s3://{bucket}/daily")
        cfg = load_config(DAILY, [*overrides, f"daily.raw=s3://{bucket}/daily"])
        days = window(cfg, cfg_dir())
        assert [d.name for d in days] == ["2026-01-01", "2026-01-02"]
        assert days[0].raw.files == (f"s3://{bucket}/daily/day=2026-01-01/part-00000-a1b2.snappy.parquet",
                                 f"s3://{bucket}/daily/day=2026-01-01/part-00001-a1b2.snappy.parquet")
        _, remote = _prepare_first_day(cfg, tmp_path / "s3")
        _, local = _prepare_first_day(load_config(DAILY, overrides), tmp_path / "legacy")
        for split, frame in _prepared(local).items():
            assert frame.equals(_prepared(remote)[split]), split

        events = _write_hive(tmp_path / "events", raw, "ts")
        upload_dir(events, f"s3://{bucket}/ok")
        pq.write_table(raw, tmp_path / "one.parquet")
        prepare(write_spec(tmp_path, f"s3://{bucket}/ok", output=str(tmp_path / "from-s3")))
        prepare(write_spec(tmp_path, tmp_path / "one.parquet", output=str(tmp_path / "one")))
        for split, frame in _prepared(tmp_path / "one").items():
            assert frame.equals(_prepared(tmp_path / "from-s3")[split]), split

        (events / "dt=2026-11-04" / "part-00001-a1b2.snappy.parquet").unlink()
        _empty_parquet(events / "dt=2026-11-04" / "part-00000-a1b2.snappy.parquet", raw.schema)
        upload_dir(events, f"s3://{bucket}/events")
        with pytest.raises(DataError, match=f"s3://{bucket}/events/dt=2026-11-04: the "
                                            "partition's 1 Parquet file"):
            prepare(write_spec(tmp_path, f"s3://{bucket}/events"))


@pytest.mark.heavy
def test_daily_job_runs_on_hive_days(synthetic_days, ray_local, tmp_path):
    """The whole job (Ray, MLflow) on the Hive copy: the day is named by its date and tested
    on the next partition's rows, scored here through the exported bundle."""
    from mlflow.tracking import MlflowClient
    from sklearn.metrics import roc_auc_score

    from pipelines.jobs.daily import daily
    from recmtl.export.scorer import BundleScorer

    root, overrides = synthetic_days
    result = daily(DAILY, [*overrides, f"daily.raw={root / 'hive'}", "daily.days=1",
                           f"daily.work_dir={tmp_path / 'work'}", "data.batch_size=256",
                           "evaluate.bootstrap=0", "export.onnx=false",
                           f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
                           "mlflow.system_metrics=false"])
    (day,) = result["days"]
    assert (day["day"], day["window"]) == (0, "day=2026-01-01..day=2026-01-02")
    assert (tmp_path / "work" / "2026-01-01" / "data" / "train").is_dir()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    checkpoint = Path(client.get_run(day["run_id"]).data.tags["recmtl.checkpoint"])
    test = pq.read_table(root / "data" / "raw" / "day-0001.parquet")
    scores = BundleScorer(checkpoint.parent.parent.parent / "export").score_raw(test)
    click = test.column("click").to_numpy().astype(int)
    assert day["auc"]["ctr"] == pytest.approx(roc_auc_score(click, scores["ctr"].numpy()),
                                              abs=1e-9)
