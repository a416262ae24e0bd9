import numpy as np
import pytest
import torch

from recmtl.config import derive, load_config
from recmtl.data.reader import ParquetBatchReader
from recmtl.data.schema import FeatureSchema
from recmtl.errors import ConfigError
from recmtl.export.bundle import export_bundle
from recmtl.export.parity import check_parity, kjt_to_csr
from recmtl.export.scorer import BundleScorer
from recmtl.losses import task_probabilities
from recmtl.models.builder import build_model
from recmtl.modules.numeric import quantile_edges

ROWS = 300


@pytest.fixture(scope="module")
def periodic(smoke_cfg, tmp_path_factory):
    cfg = derive(smoke_cfg, {"model.numeric_encoding": "periodic", "model.numeric_dim": 3,
                            "model.numeric_frequencies": 5, "model.numeric_sigma": 0.5})
    model = build_model(cfg, seed=11).eval()
    reader = ParquetBatchReader(f"{cfg.data.root}/test", FeatureSchema.from_config(cfg), ROWS)
    batch = next(iter(reader.epoch(0)))
    out = tmp_path_factory.mktemp("numeric_bundle")
    export_bundle(model, cfg, out, model.pooled(batch.sparse).detach(), batch.dense)
    return cfg, model, batch, out


def test_dense_floats_enter_the_backbone_encoded(periodic):
    cfg, model, batch, _ = periodic
    encoder = model.dense_ranker.dense_encoder
    num_dense = len(cfg.features.dense)
    assert num_dense > 0 and encoder.output_dim == 3 * num_dense
    assert encoder.frequencies.shape == (num_dense, 5)
    plain = build_model(derive(cfg, {"model.numeric_encoding": "none"}), seed=11)
    assert plain.dense_ranker.dense_encoder is None
    # The backbone's input widens by (dim - 1) per dense float.
    width = {name: p.shape for name, p in model.dense_ranker.backbone.named_parameters()}
    plain_width = {name: p.shape for name, p in plain.dense_ranker.backbone.named_parameters()}
    assert width.keys() == plain_width.keys() and width != plain_width
    # Moving one dense float changes the scores through its embedding.
    moved = batch.dense.clone()
    moved[:, 0] += 1.0
    with torch.no_grad():
        a = model(batch.dense, batch.sparse)["ctr"]
        b = model(moved, batch.sparse)["ctr"]
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_bundle_matches_the_model(periodic, backend):
    cfg, model, batch, out = periodic
    diffs = check_parity(model, BundleScorer(out, backend), batch, cfg.tasks, atol=1e-5)
    assert set(diffs) == {t.name for t in cfg.tasks}


@pytest.mark.parametrize("backend", ["torch", "onnx"])
@pytest.mark.parametrize("rows", [1, 7])
def test_dynamic_batch(periodic, rows, backend):
    cfg, model, batch, out = periodic
    csr = {k: (v[: o[rows]], o[: rows + 1]) for k, (v, o) in kjt_to_csr(batch).items()}
    got = BundleScorer(out, backend).score(csr, batch.dense[:rows])
    with torch.no_grad():
        want = task_probabilities(model(batch.dense, batch.sparse), cfg.tasks)
    for task in want:
        np.testing.assert_allclose(got[task].numpy(), want[task][:rows].numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("overrides, message", [
    (["model.numeric_encoding=quantile"], "key 'model.numeric_encoding': expected one of"),
    (["model.numeric_encoding=piecewise_linear", "model.numeric_bins=0"], "numeric_bins"),
    (["model.numeric_encoding=periodic", "model.numeric_sigma=0"], "numeric_sigma > 0"),
    (["model.numeric_encoding=periodic", "model.numeric_dim=0"], "numeric_dim"),
    (["model.numeric_encoding=periodic", "model.arch=multitab"], "not for multitab"),
])
def test_bad_numeric_keys_fail(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("configs/demo.yaml", overrides)


def test_numeric_configs_load():
    assert load_config("configs/models/numeric_periodic.yaml").model.numeric_encoding == "periodic"
    ple = load_config("configs/models/numeric_ple.yaml").model
    assert ple.numeric_encoding == "piecewise_linear" and ple.numeric_bins == 16


def test_piecewise_linear_bundle_keeps_the_trained_edges(smoke_cfg, tmp_path):
    """Edges from the data, loaded into a model built without them (as a restore does),
    exported: the bundle scores as the model with the data's edges."""
    cfg = derive(smoke_cfg, {"model.numeric_encoding": "piecewise_linear", "model.numeric_bins": 6,
                            "model.numeric_dim": 3})
    reader = ParquetBatchReader(f"{cfg.data.root}/test", FeatureSchema.from_config(cfg), ROWS)
    batch = next(iter(reader.epoch(0)))
    edges = quantile_edges(batch.dense.double().numpy(), 6)
    trained = build_model(cfg, seed=4, numeric_edges=edges).eval()
    model = build_model(cfg, seed=5).eval()
    model.load_state_dict(trained.state_dict())
    encoder = model.dense_ranker.dense_encoder
    assert encoder.output_dim == 3 * len(cfg.features.dense)
    np.testing.assert_allclose(encoder.lower[0, : len(edges[0]) - 1].numpy(), edges[0][:-1],
                               rtol=1e-6)
    export_bundle(model, cfg, tmp_path, model.pooled(batch.sparse).detach(), batch.dense)
    for backend in ("torch", "onnx"):
        check_parity(trained, BundleScorer(tmp_path, backend), batch, cfg.tasks, atol=1e-5)
