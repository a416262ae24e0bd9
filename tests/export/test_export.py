import json
import subprocess
import sys

import pytest
import torch

from recmtl.data.reader import ParquetBatchReader
from recmtl.data.schema import FeatureSchema
from recmtl.export.bundle import export_bundle
from recmtl.export.parity import ParityError, check_parity, kjt_to_csr
from recmtl.export.scorer import BundleError, BundleScorer
from recmtl.losses import task_probabilities
from recmtl.models.builder import build_model


@pytest.fixture(scope="module")
def exported(smoke_cfg, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle")
    model = build_model(smoke_cfg, seed=7).eval()
    reader = ParquetBatchReader(f"{smoke_cfg.data.root}/test", FeatureSchema.from_config(smoke_cfg),
                                300)
    batch = next(iter(reader.epoch(0)))
    manifest = export_bundle(model, smoke_cfg, out, model.pooled(batch.sparse).detach(), batch.dense)
    return model, batch, out, manifest


def test_bundle_matches_trained_model(exported, smoke_cfg):
    model, batch, out, manifest = exported
    diffs = check_parity(model, BundleScorer(out), batch, smoke_cfg.tasks, atol=1e-5)
    assert set(diffs) == {"ctr", "cvr", "ctcvr"}
    assert [t["name"] for t in manifest["tasks"]] == ["ctr", "cvr", "ctcvr"]
    assert manifest["tasks"][2]["meaning"] == "P(conversion=1) = ctr x cvr"


@pytest.mark.parametrize("rows", [1, 7])
def test_dynamic_batch(exported, smoke_cfg, rows):
    model, batch, out, _ = exported
    scorer = BundleScorer(out)
    csr = {k: (v[: o[rows]], o[: rows + 1]) for k, (v, o) in kjt_to_csr(batch).items()}
    got = scorer.score(csr, batch.dense[:rows])
    with torch.no_grad():
        want = task_probabilities(model(batch.dense, batch.sparse), smoke_cfg.tasks)
    for task in want:
        torch.testing.assert_close(got[task], want[task][:rows], rtol=0, atol=1e-5)


def test_parity_fails_loudly_on_a_different_model(exported, smoke_cfg):
    _, batch, out, _ = exported
    other = build_model(smoke_cfg, seed=8).eval()
    with pytest.raises(ParityError, match="differs from the trained model"):
        check_parity(other, BundleScorer(out), batch, smoke_cfg.tasks, atol=1e-5)


def test_checksum_mismatch_is_an_error(exported, tmp_path):
    _, _, out, manifest = exported
    bad = dict(manifest, files=dict(manifest["files"], **{"dense.pt2": "0" * 64}))
    for name in ("embeddings.safetensors", "dense.pt2"):
        (tmp_path / name).write_bytes((out / name).read_bytes())
    (tmp_path / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(BundleError, match="dense.pt2: sha256 .* does not match"):
        BundleScorer(tmp_path)
    (tmp_path / "dense.pt2").unlink()
    with pytest.raises(BundleError, match="missing dense.pt2"):
        BundleScorer(tmp_path)


def test_missing_feature_is_an_error(exported):
    _, batch, out, _ = exported
    csr = kjt_to_csr(batch)
    del csr["slot"]
    with pytest.raises(BundleError, match="lacks sparse feature 'slot'"):
        BundleScorer(out).score(csr, batch.dense)


def test_scorer_and_modules_stay_free_of_heavy_imports():
    code = ("import sys, recmtl.export.scorer, recmtl.modules.mmoe; "
            "bad = [m for m in ('torchrec', 'ray', 'mlflow') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("arch", ["shared_bottom", "mmoe", "ple"])
def test_every_architecture_exports_with_parity(arch, smoke_cfg, tmp_path):
    import dataclasses

    cfg = dataclasses.replace(smoke_cfg, model=dataclasses.replace(smoke_cfg.model, arch=arch))
    model = build_model(cfg, seed=3).eval()
    reader = ParquetBatchReader(f"{cfg.data.root}/test", FeatureSchema.from_config(cfg), 200)
    batch = next(iter(reader.epoch(0)))
    export_bundle(model, cfg, tmp_path, model.pooled(batch.sparse).detach(), batch.dense)
    diffs = check_parity(model, BundleScorer(tmp_path), batch, cfg.tasks, atol=1e-5)
    assert max(diffs.values()) <= 1e-5
