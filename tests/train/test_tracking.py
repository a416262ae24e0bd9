"""MLflow against a real server on 127.0.0.1: fail fast when it is down at the start, keep
training and buffer when it drops mid-run, log the backlog when it returns."""

import json
import os
import subprocess
import sys
import time
import urllib.request

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from pipelines.jobs.train import train
from recmtl.config import derive
from recmtl.train.tracking import MetricBuffer, TrackingUnavailable, check_reachable
from tests.conftest import with_output
from tests.ports import free_port


def _start_server(db, port):
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("mlflow server did not start")


def _stop(proc):
    proc.terminate()
    proc.wait(timeout=30)


def test_unreachable_server_fails_fast_before_any_compute(smoke_cfg, tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    t0 = time.perf_counter()
    with pytest.raises(TrackingUnavailable, match=f"{uri} is unreachable.*Nothing was computed"):
        check_reachable(uri)
    assert time.perf_counter() - t0 < 15
    cfg = with_output(smoke_cfg, tmp_path)
    cfg = derive(cfg, {"mlflow.tracking_uri": uri})
    with pytest.raises(TrackingUnavailable):
        train(cfg)
    assert not (tmp_path / "runs").exists()  # no run directory, no Ray, no training


@pytest.mark.heavy  # 16 s: an MLflow server stopped and started again
def test_metrics_survive_a_server_outage(tmp_path):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _start_server(tmp_path / "mlflow.db", port)
    try:
        client = MlflowClient(uri)
        run_id = client.create_run(client.create_experiment("outage")).info.run_id
        buffer = MetricBuffer(uri, run_id, spill_path=tmp_path / "spill.jsonl", timeout_s=2)
        buffer.add({"loss": 1.0}, step=1)
        assert buffer.flush()
        _stop(server)
        buffer.add({"loss": 0.5}, step=2)
        t0 = time.perf_counter()
        assert not buffer.flush()  # training goes on; the metric stays buffered
        assert time.perf_counter() - t0 < 15 and len(buffer.pending) == 1
        server = _start_server(tmp_path / "mlflow.db", port)
        buffer.add({"loss": 0.25}, step=3)
        assert buffer.flush() and not buffer.pending
        history = MlflowClient(uri).get_metric_history(run_id, "loss")
        assert [(m.step, m.value) for m in history] == [(1, 1.0), (2, 0.5), (3, 0.25)]
        _stop(server)
        buffer.add({"loss": 0.125}, step=4)
        buffer.close(attempts=2, wait_s=0.1)  # never comes back: spilled, not lost
        lines = [json.loads(x) for x in (tmp_path / "spill.jsonl").read_text().splitlines()]
        assert [(x["key"], x["value"], x["step"]) for x in lines] == [("loss", 0.125, 4)]
    finally:
        if server.poll() is None:
            _stop(server)
    mlflow.set_tracking_uri(None)
