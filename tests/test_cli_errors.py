"""Each expected failure, through the real `recmtl` command: one `recmtl: error: ...` line that
names what to fix, exit code 2, no traceback; `--debug` brings the traceback back."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

RECMTL = [sys.executable, "-m", "pipelines.cli"]


def recmtl(*args, timeout=300, env=None):
    return subprocess.run([*RECMTL, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=Path(__file__).resolve().parent.parent,
                          env=None if env is None else os.environ | env)


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("recmtl: error: "), proc.stderr[-3000:]
    for needle in needles:
        assert needle in last, last
    return last


def test_unknown_config_key_names_key_and_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: " + str(Path("configs/smoke.yaml").resolve()) + "\ntrain: {epocs: 2}\n")
    proc = recmtl("train", bad)
    assert_one_line_error(proc, str(bad), "unknown key(s) ['epocs']")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_bad_override_value_and_debug_traceback(tmp_path):
    proc = recmtl("generate", "configs/smoke.yaml", "model.arch=moe")
    assert_one_line_error(proc, "configs/smoke.yaml", "'model.arch'", "got 'moe'")
    debug = recmtl("generate", "configs/smoke.yaml", "model.arch=moe", "--debug")
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "ConfigError" in debug.stderr


def test_missing_config_file(tmp_path):
    assert_one_line_error(recmtl("train", tmp_path / "nope.yaml"), "nope.yaml", "no such file")


def test_missing_data_root_fails_before_ray_starts(tmp_path):
    t0 = time.perf_counter()
    proc = recmtl("train", "configs/smoke.yaml", f"data.root={tmp_path / 'absent'}",
                  f"output_dir={tmp_path / 'runs'}",
                  f"mlflow.tracking_uri=sqlite:///{tmp_path / 'm.db'}")
    seconds = time.perf_counter() - t0
    assert_one_line_error(proc, str(tmp_path / "absent" / "train"), "recmtl generate")
    assert "Ray" not in proc.stderr and "RayTrainWorker" not in proc.stdout
    assert not (tmp_path / "runs").exists()  # nothing started, nothing written
    assert seconds < 60, seconds  # before: ~38 s of Ray start, retries and worker tracebacks


def test_unreachable_mlflow_server(smoke_cfg, tmp_path):
    proc = recmtl("train", "configs/smoke.yaml", f"data.root={smoke_cfg.data.root}",
                  f"output_dir={tmp_path / 'runs'}", "mlflow.tracking_uri=http://127.0.0.1:9")
    assert_one_line_error(proc, "http://127.0.0.1:9", "unreachable")


def test_schema_mismatch_in_a_later_file_is_caught_before_ray(smoke_cfg, tmp_path):
    root = tmp_path / "store"
    shutil.copytree(smoke_cfg.data.root, root)
    victim = sorted((root / "valid").glob("*.parquet"))[-1]
    table = pq.read_table(victim)
    pq.write_table(table.drop_columns(["item_id"]), victim)
    proc = recmtl("train", "configs/smoke.yaml", f"data.root={root}",
                  f"output_dir={tmp_path / 'runs'}",
                  f"mlflow.tracking_uri=sqlite:///{tmp_path / 'm.db'}")
    assert_one_line_error(proc, str(victim), "'item_id'", "missing")
    assert not (tmp_path / "runs").exists()


@pytest.mark.ray
def test_data_error_inside_a_worker_is_one_line_and_not_retried(smoke_cfg, tmp_path, ray_local):
    """Values are checked by the workers as they read: an id out of range in the last row group
    of the last train file fails the job once (max_failures=2 would otherwise restart it twice)."""
    root = tmp_path / "store"
    shutil.copytree(smoke_cfg.data.root, root)
    victim = sorted((root / "train").glob("*.parquet"))[-1]
    table = pq.read_table(victim)
    items = table.column("item_id").to_numpy().copy()
    items[-1] = smoke_cfg.features.tables[1].num_embeddings + 7  # one id past the item table
    table = table.set_column(table.schema.get_field_index("item_id"), "item_id",
                             pa.array(items, table.schema.field("item_id").type))
    pq.write_table(table, victim, row_group_size=smoke_cfg.synthetic.row_group_size)
    proc = recmtl("train", "configs/smoke.yaml", f"data.root={root}", "train.max_failures=2",
                  f"output_dir={tmp_path / 'runs'}",
                  f"mlflow.tracking_uri=sqlite:///{tmp_path / 'm.db'}", timeout=600,
                  # the session's Ray (two clusters on one machine confuse Ray's state API)
                  env={"RAY_ADDRESS": ray_local.get_runtime_context().gcs_address})
    assert_one_line_error(proc, str(victim), "'item_id'", "out of range")
    attempts = proc.stdout.count("epoch 0") + proc.stderr.count("Attempting to start training")
    assert proc.stderr.count("recmtl: error:") == 1
    assert "Retrying" not in proc.stderr and "RETRY" not in proc.stderr, proc.stderr[-3000:]
    assert attempts <= 1, proc.stderr[-3000:]
