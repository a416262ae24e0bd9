"""Rank 0's progress events and the driver's view of them: the file another process writes
is followed to its end, half-written lines wait, and the bar lands where the events say."""

import json

from recmtl.train.job import WorkerJob
from recmtl.train.progress import EVENTS, Progress, ProgressView


def test_driver_view_follows_rank_zero_events(smoke_cfg, tmp_path, capsys):
    job = WorkerJob(smoke_cfg, run_dir=str(tmp_path))
    rank0, rank1 = Progress(job, rank=0, world=2), Progress(job, rank=1, world=2)
    with ProgressView(tmp_path, interval_s=0.01) as view:
        for p in (rank0, rank1):
            p.epoch_start(epoch=0, steps=10, first=4, global_step=4)
            p.log(3, {"ctr": 0.5, "cvr": 0.25}, rows=300, extra={})
            p.log(6, {"ctr": 0.4, "cvr": 0.2}, rows=300, extra={})
        with (tmp_path / EVENTS).open("a") as f:
            f.write('{"event": "log", "st')  # a line still being written
        view._drain()
        assert view.bar is not None and view.bar.n == 10  # first 4 + 6 steps
        with (tmp_path / EVENTS).open("a") as f:
            f.write('ep": 6, "loss": 0.6, "samples_s": 1.0}\n')
        rank0.epoch_end(0, {"valid/auc_ctr": 0.75, "rows_trained": 9}, {}, {}, step=10)
    events = [json.loads(line) for line in (tmp_path / EVENTS).read_text().splitlines()]
    assert [e["event"] for e in events] == ["epoch_start", "log", "log", "log", "epoch_end"]
    assert events[2]["samples_s"] > 0 and abs(events[2]["loss"] - 0.6) < 1e-12
    out = capsys.readouterr()
    assert "epoch 0: valid/auc_ctr=0.7500" in out.out and "rows_trained" not in out.out
    assert "10/10" in out.err  # the bar, drawn by the view, reached the end


def test_without_a_run_dir_rank_zero_draws_itself(smoke_cfg, tmp_path, capsys):
    progress = Progress(WorkerJob(smoke_cfg, checkpoint_root=str(tmp_path)), rank=0, world=1)
    progress.epoch_start(epoch=1, steps=5, first=0, global_step=0)
    progress.log(5, {"ctr": 0.5}, rows=10, extra={})
    progress.close()
    assert not (tmp_path / EVENTS).exists()
    assert "epoch 1" in capsys.readouterr().err
