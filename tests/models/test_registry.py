"""Every registered architecture, from its example config (``configs/models/<name>.yaml``):
it builds, a training step moves its backbone and embeddings, and it exports with parity."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from recmtl.config import ARCHITECTURES as CONFIG_CHOICES
from recmtl.config import load_config
from recmtl.data.reader import ParquetBatchReader
from recmtl.data.schema import FeatureSchema
from recmtl.export.bundle import export_bundle
from recmtl.export.parity import check_parity
from recmtl.export.scorer import BundleScorer
from recmtl.models.architecture import BackboneInputs
from recmtl.models.builder import build_model
from recmtl.models.features import backbone_inputs, build_interaction
from recmtl.models.registry import ARCHITECTURES
from recmtl.train.checkpoint import load_unsharded
from recmtl.train.job import WorkerJob
from recmtl.train.worker import run_worker

ROOT = "configs/models"


def test_the_registry_is_the_configs_list_of_choices():
    assert list(ARCHITECTURES) == list(CONFIG_CHOICES)


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_every_architecture_has_an_example_config_that_names_it(name):
    assert load_config(f"{ROOT}/{name}.yaml").model.arch == name


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_a_backbone_reports_the_width_its_towers_read(name):
    """``output_dim`` is what the builder chains the towers on: check it against a forward."""
    cfg = load_config(f"{ROOT}/{name}.yaml")
    interaction = build_interaction(cfg)
    inputs = backbone_inputs(cfg, interaction, len(cfg.features.dense))
    backbone = ARCHITECTURES[name].build(cfg.model, inputs, cfg.base_tasks()).eval()
    out = backbone(torch.randn(5, inputs.width))
    assert out.shape[-1] == backbone.output_dim and out.shape[-2] == 5


def test_backbone_inputs_count_the_dense_columns_after_the_blocks():
    cfg = load_config(f"{ROOT}/mmoe.yaml")
    inputs = backbone_inputs(cfg, build_interaction(cfg), dense_width=4)
    n, d = len(cfg.features.sparse), cfg.features.tables[0].dim
    assert inputs.blocks == (d,) * n + (n * (n - 1) // 2,)  # pooled features, then the pairs
    assert inputs.num_scalars == 4 and inputs.sequences == {}
    assert BackboneInputs.flat(7).num_scalars == 7


@pytest.fixture
def one_rank_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_example_config_trains_a_step_and_exports_with_parity(name, smoke_cfg, tmp_path,
                                                             one_rank_group):
    cfg = load_config(f"{ROOT}/{name}.yaml", [
        f"data.root={smoke_cfg.data.root}", "data.batch_size=256", "train.num_workers=1",
        "train.max_steps_per_epoch=2", "train.log_every=1", "export.parity_rows=256"])
    run_worker(WorkerJob(cfg, checkpoint_root=str(tmp_path / "ckpt")))
    trained = load_unsharded(cfg, tmp_path / "ckpt" / "epoch-0000").eval()
    fresh = dict(build_model(cfg).named_parameters())
    moved = {n.split(".")[0] + "." + n.split(".")[1] for n, p in trained.named_parameters()
             if not torch.equal(p, fresh[n])}
    assert "dense_ranker.backbone" in moved and any(m.startswith("embeddings") for m in moved)
    reader = ParquetBatchReader(f"{cfg.data.root}/test", FeatureSchema.from_config(cfg), 256)
    batch = next(iter(reader.epoch(0)))
    out = tmp_path / "bundle"
    export_bundle(trained, cfg, out, trained.pooled(batch.sparse).detach(), batch.dense)
    for backend in ("torch", "onnx"):
        diffs = check_parity(trained, BundleScorer(out, backend), batch, cfg.tasks, atol=1e-5)
        assert set(diffs) == {t.name for t in cfg.tasks} and max(diffs.values()) <= 1e-5
