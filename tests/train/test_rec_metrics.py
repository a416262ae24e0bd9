"""torchrec's RecMetricModule as wired here, against sklearn and float64 references: each task
in its own sample space (CVR on clicked rows via zero weights), composed tasks as products."""

import numpy as np
import pytest
import torch
import torch.distributed as dist
from sklearn.metrics import log_loss, roc_auc_score

from recmtl.config import TaskConfig
from recmtl.train.rec_metrics import build_rec_metrics, computed, metric_inputs

TASKS = (TaskConfig("ctr", "click"), TaskConfig("cvr", "conversion", space="click"),
         TaskConfig("ctcvr", "conversion", product_of=("ctr", "cvr")),
         TaskConfig("watch", "log_watch_time", kind="regression"))


@pytest.fixture
def one_rank(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_metrics_match_sklearn_in_each_sample_space(one_rank):
    module = build_rec_metrics(TASKS, batch_size=500, device=torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    probs, labels = {"ctr": [], "cvr": [], "ctcvr": []}, {"click": [], "conversion": []}
    for _ in range(4):
        click = (torch.rand(500, generator=g) < 0.3).float()
        conv = click * (torch.rand(500, generator=g) < 0.4).float()
        out = {"ctr": torch.randn(500, generator=g) + click, "cvr": torch.randn(500, generator=g)
               + 2 * conv, "watch": torch.randn(500, generator=g)}
        batch = {"click": click, "conversion": conv, "log_watch_time": torch.zeros(500)}
        module.update(metric_inputs(out, batch, TASKS))
        p_ctr, p_cvr = torch.sigmoid(out["ctr"]), torch.sigmoid(out["cvr"])
        for k, v in (("ctr", p_ctr), ("cvr", p_cvr), ("ctcvr", p_ctr * p_cvr)):
            probs[k].append(v.double().numpy())
        labels["click"].append(click.numpy())
        labels["conversion"].append(conv.numpy())
    p = {k: np.concatenate(v) for k, v in probs.items()}
    y = {k: np.concatenate(v) for k, v in labels.items()}
    got = computed(module)
    clicked = y["click"] == 1
    spaces = {"ctr": (y["click"], p["ctr"]),
              "cvr": (y["conversion"][clicked], p["cvr"][clicked]),
              "ctcvr": (y["conversion"], p["ctcvr"])}
    for task, (labels_t, probs_t) in spaces.items():
        assert got[f"train/auc-{task}/window_auc"] == pytest.approx(
            roc_auc_score(labels_t, probs_t), abs=1e-4)
        base = labels_t.mean()
        entropy = -(base * np.log(base) + (1 - base) * np.log(1 - base))
        assert got[f"train/ne-{task}/lifetime_ne"] == pytest.approx(
            log_loss(labels_t, probs_t) / entropy, rel=1e-3)
        assert got[f"train/calibration-{task}/lifetime_calibration"] == pytest.approx(
            probs_t.sum() / labels_t.sum(), rel=1e-4)
    assert not any("watch" in k for k in got)  # regression tasks are not AUC material
    assert got["train/throughput-throughput/total_examples"] == 2000
