"""`recmtl daily` over three small synthetic days through Ray and MLflow: each day prepared from
the day before, trained warm from yesterday's model, tested on the next day's raw rows,
registered with its lineage and promoted; the promotion gate refuses and accepts."""

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from pipelines.jobs.daily import daily, promote, window
from pipelines.synthetic.store import generate
from recmtl.config import load_config
from recmtl.export.scorer import BundleScorer

CONFIG = "configs/daily/daily.yaml"


@pytest.fixture(scope="module")
def three_days(tmp_path_factory, ray_local):
    """Days 0 and 1 in a first invocation on one worker; day 2 in a second one on two workers
    (yesterday's checkpoint resharded), stopped by a killed worker in the middle of the day; a
    third invocation takes day 2 up; a fourth has nothing to do."""
    root = tmp_path_factory.mktemp("daily")
    overrides = [f"data.root={root / 'data'}", "synthetic.days=4", "synthetic.rows_per_day=8000",
                 "synthetic.num_users=1500", "synthetic.num_items=600", "synthetic.num_categories=20",
                 "synthetic.row_group_size=4000", f"daily.raw={root / 'data' / 'raw'}",
                 f"daily.work_dir={root / 'work'}", "data.batch_size=512",
                 "data.eval_batch_size=4096", "train.log_every=5", "evaluate.bootstrap=0",
                 "export.onnx=false", f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}",
                 "mlflow.system_metrics=false", "train.checkpoint_every_steps=4"]
    generate(load_config(CONFIG, overrides))
    first = daily(CONFIG, [*overrides, "daily.days=2", "train.num_workers=1"])
    with pytest.raises(RuntimeError, match="worker pool: a worker failed while training"):
        daily(CONFIG, [*overrides, "daily.days=3", f"train.kill_worker_at_step={KILL_AT}"])
    stopped = json.loads((root / "work" / "daily.json").read_text())
    result = daily(CONFIG, [*overrides, "daily.days=3"])
    again = daily(CONFIG, [*overrides, "daily.days=3"])
    return root, [*overrides, "daily.days=3"], result, {"first": first, "stopped": stopped,
                                                       "again": again}


KILL_AT = 6  # day 2's 6th step: after the checkpoint at step 4


def test_each_day_is_tested_on_the_next_days_raw_rows(three_days):
    root, _, result, _ = three_days
    assert [d["day"] for d in result["days"]] == [0, 1, 2]
    assert json.loads((root / "work" / "daily.json").read_text()) == json.loads(json.dumps(result))
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    for day in result["days"]:
        test = pq.read_table(root / "data" / "raw" / f"day-{day['day'] + 1:04d}.parquet")
        tags = client.get_run(day["run_id"]).data.tags
        bundle = Path(tags["recmtl.checkpoint"]).parent.parent.parent / "export"
        scores = BundleScorer(bundle).score_raw(test)
        click = test.column("click").to_numpy().astype(int)
        conversion = test.column("conversion").to_numpy().astype(int)
        assert day["auc"]["ctr"] == pytest.approx(roc_auc_score(click, scores["ctr"].numpy()),
                                                  abs=1e-9)
        clicked = click == 1
        assert day["auc"]["cvr"] == pytest.approx(
            roc_auc_score(conversion[clicked], scores["cvr"].numpy()[clicked]), abs=1e-9)
        assert 0.55 < day["auc"]["ctr"] < 1.0  # it learned something


def test_lineage_and_warm_start_recorded(three_days):
    root, _, result, _ = three_days
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    days = result["days"]
    runs = [client.get_run(d["run_id"]) for d in days]
    assert "recmtl.warm_start" not in runs[0].data.tags
    for before, after, day in zip(runs, runs[1:], days[1:], strict=False):
        assert after.data.tags["recmtl.warm_start"] == before.data.tags["recmtl.checkpoint"]
        assert after.data.tags["recmtl.parent_run"] == before.info.run_id
        carried = json.loads(Path(client.download_artifacts(after.info.run_id, "warm_start.json",
                                                            str(root))).read_text())
        assert carried["tables"]["user_id"]["carried"] > 0
        assert carried["tables"]["user_id"]["carried"] <= carried["tables"]["user_id"]["new_rows"]
        version = client.get_model_version("daily", day["model_version"])
        data_dir = root / "work" / f"day-{day['day']:04d}" / "data"
        transforms = json.loads((data_dir / "transforms.json").read_text())
        assert version.tags["recmtl.data_version"] == transforms["version"]
        assert version.tags["recmtl.parent_run"] == before.info.run_id
        assert version.tags["recmtl.data_window"] == \
            f"day-{day['day']:04d}.parquet..day-{day['day'] + 1:04d}.parquet"
        assert version.tags["recmtl.config_hash"] == after.data.tags["recmtl.config_hash"]
        remap = json.loads((data_dir / "remap" / "remap.json").read_text())
        previous = json.loads((root / "work" / f"day-{day['day'] - 1:04d}" / "data" /
                               "transforms.json").read_text())
        assert remap["from_version"] == previous["version"] == transforms["parent_version"]


def test_promotion_gate_refuses_and_accepts(three_days):
    root, overrides, result, _ = three_days
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    alias = client.get_model_version_by_alias("daily", "champion")
    promoted = [d for d in result["days"] if d["promoted"]]
    assert str(alias.version) == promoted[-1]["model_version"]
    first = result["days"][0]  # re-judge day 0's version against the current champion
    cfg = load_config(CONFIG, overrides)
    summary = {"model_version": first["model_version"], "run_id": first["run_id"],
               "export": str(Path(client.get_run(first["run_id"]).data.tags["recmtl.checkpoint"])
                             .parent.parent.parent / "export")}
    day = window(cfg, Path(CONFIG).resolve().parent)[2]
    assert (day.index, day.raw.files, day.next_raw.files) == (
        2, (str(root / "data" / "raw" / "day-0002.parquet"),),
        (str(root / "data" / "raw" / "day-0003.parquet"),))
    strict = promote(client, "daily", summary, day, cfg, cfg.daily.__class__(
        **{**vars(cfg.daily), "promote_tolerance": -1.0}))  # must gain a whole AUC point
    assert not strict["promoted"] and "not promoted" in strict["reason"] and "ctr" in strict["reason"]
    assert client.get_model_version_by_alias("daily", "champion").version == alias.version
    tags = client.get_model_version("daily", first["model_version"]).tags
    assert tags["recmtl.promotion"] == strict["reason"]
    lax = promote(client, "daily", summary, day, cfg, cfg.daily.__class__(
        **{**vars(cfg.daily), "promote_tolerance": 1.0}))
    assert lax["promoted"] and np.isfinite(lax["auc"]["ctr"])
    assert str(client.get_model_version_by_alias("daily", "champion").version) == first["model_version"]


def test_a_second_invocation_continues_after_the_last_finished_day(three_days):
    root, _, result, runs = three_days
    first = runs["first"]["days"]
    assert [d["name"] for d in first] == ["day-0000", "day-0001"]
    assert result["days"][:2] == first  # kept as they were, not trained again
    assert result["days"][2]["warm_start"] == first[1]["run_dir"]
    assert runs["again"] == result  # nothing left to do: nothing trained, nothing changed
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    runs_trained = client.search_runs([client.get_experiment_by_name("recmtl-daily").experiment_id])
    assert len(runs_trained) == 3  # one MLflow run per day, the stopped day's run resumed
    hashes = [client.get_run(d["run_id"]).data.tags["recmtl.config_hash"] for d in result["days"]]
    assert hashes[0] == hashes[1] != hashes[2]  # one config, one hash, whatever the day's data
    # and window; train.num_workers changed with the second invocation, and with it the hash


def test_a_day_stopped_by_a_killed_worker_is_taken_up_where_it_stopped(three_days):
    root, _, result, runs = three_days
    stopped = runs["stopped"]
    assert [d["name"] for d in stopped["days"]] == ["day-0000", "day-0001"]
    assert stopped["in_progress"]["name"] == "day-0002"
    day = result["days"][2]
    assert day["run_dir"] == stopped["in_progress"]["run_dir"] and result["in_progress"] is None
    events = [json.loads(line) for line in
              (Path(day["run_dir"]) / "progress.jsonl").read_text().splitlines()]
    resumed = [e for e in events if e["event"] == "resumed"]
    assert len(resumed) == 1 and resumed[0]["global_step"] == 4  # from the step-4 checkpoint
    starts = [e for e in events if e["event"] == "epoch_start"]
    assert [(e["first"], e["steps"]) for e in starts][-1][0] == 4  # steps 5.. trained once
    # the worker checks that the epoch covered the split exactly (rows before the resume plus
    # rows after it); the summary's rows say the same
    summary = json.loads((Path(day["run_dir"]) / "summary.json").read_text())
    assert summary["run_id"] == day["run_id"]


def test_the_new_id_slice_is_the_rows_with_a_value_the_days_vocabulary_lacks(three_days):
    root, _, result, _ = three_days
    for day in result["days"]:
        data = Path(day["data"])
        transforms = json.loads((data / "transforms.json").read_text())
        test = pq.read_table(root / "data" / "raw" / f"day-{day['day'] + 1:04d}.parquet")
        new = np.zeros(test.num_rows, dtype=bool)
        for f in transforms["sparse"]:
            if f["transform"] != "vocab" or f.get("multi_valued"):
                continue
            known = set(pq.read_table(data / "vocab" / f"{f['table']}.parquet")["value"]
                        .to_pylist())
            new |= np.array([v is None or str(v) not in known
                             for v in test.column(f["column"]).to_pylist()])
        assert day["new_ids"]["rows"] == new.sum() > 0
        scores = BundleScorer(Path(day["run_dir"]) / "export").score_raw(test)
        click = test.column("click").to_numpy().astype(int)
        assert day["new_ids"]["auc"]["candidate"]["ctr"] == pytest.approx(
            roc_auc_score(click[new], scores["ctr"].numpy()[new]), abs=1e-9)
