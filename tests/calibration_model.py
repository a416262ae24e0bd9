"""A smoke model trained in this process for the calibration tests, then made miscalibrated
on purpose, saved as a checkpoint that the jobs load like a trained run's."""

from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp

from recmtl.data.reader import ParquetBatchReader
from recmtl.data.schema import FeatureSchema
from recmtl.losses import multitask_loss
from recmtl.models.builder import build_model

# Added to the heads' biases after training: every base task over-predicts, by a known amount.
BIAS_SHIFT = {"ctr": 1.0, "cvr": 1.0}


def miscalibrated_checkpoint(cfg, path: Path, seed: int = 7):
    """One epoch of Adam on the smoke train split (a real ranking, ~3 s), then ``BIAS_SHIFT``
    on the logits; returns the model, also saved at ``path`` as a DCP checkpoint."""
    torch.manual_seed(seed)
    model = build_model(cfg, seed=seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    reader = ParquetBatchReader(f"{cfg.data.root}/train", FeatureSchema.from_config(cfg), 512)
    model.train()
    for batch in reader.epoch(0):
        loss, _ = multitask_loss(model(batch.dense, batch.sparse), batch.labels, cfg.tasks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    ranker = model.dense_ranker
    with torch.no_grad():
        for task, shift in BIAS_SHIFT.items():
            ranker.heads[ranker.tasks.index(task)].bias += shift
    model.eval()
    dcp.save({"model": model.state_dict()}, checkpoint_id=str(path), no_dist=True)
    return model
