"""Object storage: `recmtl prepare` output, the reader, checkpoints and MLflow artifacts on a
real S3-compatible server on 127.0.0.1 (``tests/s3_server.py``), each compared with the same
thing on local disk; and the secret key in no output, log or MLflow param."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import torch
import torch.distributed.checkpoint as dcp
import yaml

from pipelines.cli import main
from pipelines.feature_store.prepare import prepare
from pipelines.jobs.lineage import data_version
from recmtl.config import ConfigError, derive, load_config
from recmtl.data.reader import ParquetBatchReader
from recmtl.data.schema import FeatureSchema
from recmtl.errors import DataError
from recmtl.models.builder import build_model
from recmtl.storage import download_dir, upload_dir
from recmtl.train.checkpoint import load_unsharded
from recmtl.train.launch import local_checkpoint
from tests.raw_export import raw_columns, write_export, write_spec
from tests.s3_server import SECRET, create_bucket, s3_env, s3_server

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def endpoint():
    with s3_server() as url:
        yield url


@pytest.fixture
def bucket(endpoint, monkeypatch):
    """A new bucket, with the credentials and endpoint in this test's environment only."""
    for k, v in s3_env(endpoint).items():
        monkeypatch.setenv(k, v)
    name = f"recmtl-{uuid.uuid4().hex[:12]}"
    create_bucket(name)
    return f"s3://{name}"


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    return tmp, write_export(tmp, raw_columns())


def _batches(uri, cfg):
    reader = ParquetBatchReader(uri, FeatureSchema.from_config(cfg), 37, shuffle=True, seed=3)
    return list(reader.epoch(1))


def _assert_same_batches(got, expected):
    assert len(got) == len(expected) > 1
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a.dense, b.dense) and torch.equal(a.group, b.group)
        assert a.sparse.keys() == b.sparse.keys()
        assert torch.equal(a.sparse.values(), b.sparse.values())
        assert torch.equal(a.sparse.lengths(), b.sparse.lengths())
        assert a.labels.keys() == b.labels.keys()
        assert all(torch.equal(a.labels[k], b.labels[k]) for k in a.labels)


def test_prepare_to_s3_matches_local_and_the_reader_reads_it_back(export, bucket, tmp_path):
    tmp, src = export
    local = prepare(write_spec(tmp_path, src))
    uri = f"{bucket}/prepared/shop"
    remote = prepare(write_spec(tmp_path, src, output=uri))
    assert remote["splits"] == local["splits"]
    assert data_version(uri) == remote["version"] == local["version"] is not None  # lineage tag

    fs, base = pafs.FileSystem.from_uri(uri)
    local_root = tmp_path / "out"
    names = sorted(str(p.relative_to(local_root)) for p in local_root.rglob("*") if p.is_file())
    stored = sorted(i.path.removeprefix(base + "/") for i in
                    fs.get_file_info(pafs.FileSelector(base, recursive=True))
                    if i.type == pafs.FileType.File)
    assert stored == names
    for name in ("stats.json", "transforms.json"):
        with fs.open_input_stream(f"{base}/{name}") as f:
            assert json.loads(f.read()) == json.loads((local_root / name).read_text())
    with fs.open_input_stream(f"{base}/shop.yaml") as f:
        config = yaml.safe_load(f.read())
    assert config["data"]["root"] == uri  # the config written there points at the bucket
    assert yaml.safe_load((local_root / "shop.yaml").read_text())["data"]["root"] == str(local_root)

    cfg = load_config(local_root / "shop.yaml")
    for split in ("train", "test"):
        assert pq.read_table(f"{base}/{split}", filesystem=fs).equals(
            pq.read_table(local_root / split))
        _assert_same_batches(_batches(f"{uri}/{split}", cfg), _batches(str(local_root / split), cfg))


def test_prepare_starts_from_a_previous_preparation_on_s3(export, bucket, tmp_path):
    tmp, src = export
    first = f"{bucket}/day1"
    prepare(write_spec(tmp_path, src, output=first))
    local = prepare(write_spec(tmp_path, src, output=str(tmp_path / "day2-local"),
                               previous=str(download_dir(first, tmp_path / "day1"))))
    remote = prepare(write_spec(tmp_path, src, output=f"{bucket}/day2", previous=first))
    assert remote["tables"] == local["tables"]
    assert remote["version"] == local["version"] and remote["parent_version"] == local["parent_version"]
    assert remote["parent_version"] is not None and remote["incremental"]["previous"] == first


def test_checkpoint_round_trip_through_s3(smoke_cfg, bucket, tmp_path):
    """A torch.distributed.checkpoint written locally, stored in the bucket as Ray Train stores
    it, copied back by the train job's ``local_checkpoint``: the same weights come out."""
    model = build_model(smoke_cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    saved = tmp_path / "saved"
    dcp.save({"model": model.state_dict()}, checkpoint_id=str(saved), no_dist=True)
    uri = f"{bucket}/checkpoints/run-1/checkpoint_000000"
    upload_dir(saved, uri)

    copy = local_checkpoint(uri, tmp_path / "run")
    assert copy == tmp_path / "run" / "ray" / "train" / "checkpoint_000000"
    restored = load_unsharded(smoke_cfg, copy)
    expected = model.state_dict()
    for k, v in restored.state_dict().items():
        assert torch.equal(v, expected[k]), k
    assert local_checkpoint(str(saved), tmp_path / "run") == saved  # a local one stays put


def test_mlflow_artifacts_on_s3(smoke_cfg, bucket, tmp_path):
    import mlflow

    from recmtl.train.tracking import start_run

    artifacts = f"{bucket}/mlflow"
    cfg = derive(smoke_cfg, {"mlflow.tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                            "mlflow.artifact_location": artifacts, "mlflow.system_metrics": False})
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"auc": 0.75}))
    run_id = start_run(cfg, run_name="s3")
    mlflow.log_artifact(str(report))
    mlflow.end_run()

    run = mlflow.get_run(run_id)
    assert run.info.artifact_uri.startswith(artifacts)
    fs, base = pafs.FileSystem.from_uri(run.info.artifact_uri)
    with fs.open_input_stream(f"{base}/report.json") as f:  # really in the bucket
        assert json.loads(f.read()) == {"auc": 0.75}
    got = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="report.json",
                                              dst_path=str(tmp_path / "down"))
    assert json.loads(Path(got).read_text()) == {"auc": 0.75}
    params = json.dumps(run.data.params) + json.dumps(run.data.tags)
    assert SECRET not in params and os.environ["AWS_SECRET_ACCESS_KEY"] == SECRET
    assert run.data.params["mlflow.artifact_location"] == artifacts

    clash = derive(cfg, {"mlflow.artifact_location": f"{bucket}/elsewhere"})
    with pytest.raises(ConfigError, match="mlflow.artifact_location: experiment 'recmtl-smoke' already"):
        start_run(clash, run_name="clash")


def test_cli_prepare_to_s3_never_prints_the_secret(export, bucket, tmp_path, capfd):
    """The CLI (in this process, its output captured at the file descriptors, so pyarrow's and
    the AWS SDK's own lines too), told the secret by the environment only: not in its output
    on success, nor on a missing bucket (one error line naming the URI, exit 2, before any
    work). The heavy test below runs `recmtl train` in its own process."""
    tmp, src = export
    write_spec(tmp_path, src)
    spec_path = str(tmp_path / "spec.yaml")
    assert main(["prepare", spec_path, "--output", f"{bucket}/cli"]) == 0
    ok_out, ok_err = capfd.readouterr()
    assert f"copied to {bucket}/cli" in ok_out and "train: " in ok_out

    missing = "s3://recmtl-no-such-bucket/out"
    assert main(["prepare", spec_path, "--output", missing]) == 2
    out, err = capfd.readouterr()
    assert err.splitlines() == [f"recmtl: error: {missing}: cannot write there (Bucket "
                                "'recmtl-no-such-bucket' not found.)"]
    assert "rows" not in out  # it stopped before preparing anything
    for text in (ok_out, ok_err, out, err):
        assert SECRET not in text


def test_reader_errors_name_the_uri(bucket):
    with pytest.raises(DataError, match=f"^{bucket}/nothing/train: no such file or directory"):
        ParquetBatchReader(f"{bucket}/nothing/train", None, 8)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="^s3://recmtl-no-such-bucket/x: no such file"):
        ParquetBatchReader("s3://recmtl-no-such-bucket/x", None, 8)  # type: ignore[arg-type]


def test_a_uri_with_credentials_in_it_is_refused(smoke_cfg):
    with pytest.raises(ConfigError, match="train.storage_path: a URI with credentials"):
        derive(smoke_cfg, {"train.storage_path": "s3://key:secret@bucket/ckpt"})


@pytest.mark.heavy
def test_train_on_s3_data_checkpoints_and_artifacts(smoke_cfg, bucket, tmp_path):
    """`recmtl train` in its own process (its own Ray, whose workers inherit the credentials):
    data from the bucket, checkpoints to it, MLflow artifacts in it; the checkpoint copied back
    is the stored one; the secret is in no output, run file or MLflow param or tag."""
    import mlflow

    data = f"{bucket}/smoke"
    upload_dir(smoke_cfg.data.root, data)
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "train", str(ROOT / "configs/smoke.yaml"),
         f"data.root={data}", f"train.storage_path={bucket}/checkpoints",
         f"mlflow.artifact_location={bucket}/mlflow", f"mlflow.tracking_uri={db}",
         f"output_dir={tmp_path / 'runs'}", "train.max_steps_per_epoch=5", "export.onnx=false"],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, cwd=tmp_path,
        timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(next((tmp_path / "runs").glob("smoke-*/summary.json")).read_text())
    stored = summary["checkpoint_uri"]
    run_name = Path(summary["run_dir"]).name
    assert stored.startswith(f"{bucket}/checkpoints/{run_name}/epoch-")
    copy = Path(summary["checkpoint"])
    assert copy == Path(summary["run_dir"]) / "ray" / "train" / stored.rsplit("/", 1)[-1]
    fs, base = pafs.FileSystem.from_uri(stored)
    remote = {i.path.removeprefix(base + "/"): i.size for i in
              fs.get_file_info(pafs.FileSelector(base, recursive=True))
              if i.type == pafs.FileType.File}
    local = {str(p.relative_to(copy)): p.stat().st_size for p in copy.rglob("*") if p.is_file()}
    assert remote == local and ".metadata" in remote

    mlflow.set_tracking_uri(db)
    run = mlflow.get_run(summary["run_id"])
    assert run.info.artifact_uri.startswith(f"{bucket}/mlflow/")
    assert run.data.tags["recmtl.checkpoint_uri"] == stored
    fs, base = pafs.FileSystem.from_uri(run.info.artifact_uri)
    with fs.open_input_stream(f"{base}/report.json") as f:
        assert json.loads(f.read())["tasks"].keys() == {t.name for t in smoke_cfg.tasks}
    # `recmtl evaluate --checkpoint <URI>` copies it down and scores it as the run did.
    again = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "evaluate", str(ROOT / "configs/smoke.yaml"),
         f"data.root={data}", "--checkpoint", stored, "--out", str(tmp_path / "eval")],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, cwd=tmp_path,
        timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    first = json.loads(Path(summary["report"]).read_text())["tasks"]
    second = json.loads((tmp_path / "eval" / "report.json").read_text())["tasks"]
    assert {k: v["auc"] for k, v in second.items()} == pytest.approx(
        {k: v["auc"] for k, v in first.items()}, abs=1e-9)
    texts = [proc.stdout, proc.stderr, again.stdout, again.stderr, json.dumps(run.data.params),
             json.dumps(run.data.tags)]
    texts += [p.read_text(errors="replace") for p in Path(summary["run_dir"]).rglob("*")
              if p.is_file() and p.suffix in {".json", ".jsonl", ".txt", ".log", ".html", ""}]
    assert all(SECRET not in t for t in texts)
