"""A bundle exported from `recmtl prepare` output scores raw feature-store rows: its replay of
prepare's transforms (pyarrow + numpy) must give, row by row, the columns prepare wrote with
polars, and the scores of the prepared rows."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from pipelines.cli import main
from pipelines.feature_store.prepare import prepare
from recmtl.config import load_config
from recmtl.data.reader import ParquetBatchReader
from recmtl.data.schema import FeatureSchema
from recmtl.export.bundle import export_bundle
from recmtl.export.raw import RawTransforms
from recmtl.export.scorer import BundleError, BundleScorer
from recmtl.losses import task_probabilities
from recmtl.models.builder import build_model
from tests.raw_export import SPEC, N, raw_columns, write_export, write_spec

KEEP = ["ts", "row_key"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("raw")
    cols = raw_columns()
    cols["row_key"] = np.arange(N)
    cols["slot"] = np.arange(N) % 8  # identity ids: served as they are, checked by the scorer
    src = write_export(tmp, cols)
    sparse = SPEC["sparse"] + [{"name": "slot_id", "column": "slot", "transform": "identity",
                                "buckets": 8, "dim": 8}]
    prepare(write_spec(tmp, src, keep=KEEP, sparse=sparse))
    out = tmp / "out"
    cfg = load_config(out / "shop.yaml")
    model = build_model(cfg, seed=3).eval()
    reader = ParquetBatchReader(str(out / "test"), FeatureSchema.from_config(cfg), 10_000)
    batch = next(iter(reader.epoch(0)))
    manifest = export_bundle(model, cfg, tmp / "bundle", model.pooled(batch.sparse).detach(),
                             batch.dense)
    return {"src": src, "out": out, "cfg": cfg, "model": model, "batch": batch,
            "dir": tmp / "bundle", "manifest": manifest}


def _prepared_rows(out):
    table = pa.concat_tables([pq.read_table(out / split) for split in ("train", "valid", "test")])
    return table.sort_by("row_key")


def test_bundle_carries_the_transforms_and_vocabularies(bundle):
    manifest = bundle["manifest"]
    assert manifest["raw_transforms"] == "raw/transforms.json"
    assert {"raw/transforms.json", "raw/vocab/item_id.parquet"} <= set(manifest["files"])
    assert (bundle["dir"] / "raw/vocab/item_id.parquet").read_bytes() == \
        (bundle["out"] / "vocab/item_id.parquet").read_bytes()


def test_replayed_transforms_equal_prepare_output_row_by_row(bundle):
    raw = pq.read_table(bundle["src"]).sort_by("row_key")
    got = RawTransforms(bundle["dir"] / "raw/transforms.json").apply(raw)
    want = _prepared_rows(bundle["out"])
    assert got.column_names == ["user_id", "item_id", "clicked_items", "slot_id", "age", "price"]
    for name in ("user_id", "item_id", "clicked_items", "slot_id", "age"):  # ids: exactly
        assert got.column(name).to_pylist() == want.column(name).to_pylist(), name
    np.testing.assert_allclose(got.column("price").to_numpy(), want.column("price").to_numpy(),
                               rtol=1e-6, atol=1e-6)
    # the export exercises every rule: nulls, null lists, null list items, unseen ids
    assert raw.column("price").null_count and raw.column("clicked_item_ids").null_count
    assert 0 in got.column("item_id").to_pylist()


def test_dictionary_encoded_ids_read_as_their_values(bundle):
    """Warehouses write low-cardinality strings dictionary-encoded; the ids are the values."""
    raw = pq.read_table(bundle["src"]).sort_by("row_key")
    transforms = RawTransforms(bundle["dir"] / "raw/transforms.json")
    encoded = raw.set_column(raw.schema.get_field_index("item"), "item",
                             pc.dictionary_encode(raw.column("item")))
    assert pa.types.is_dictionary(encoded.schema.field("item").type)
    assert transforms.apply(encoded).column("item_id").to_pylist() == \
        _prepared_rows(bundle["out"]).column("item_id").to_pylist()


def test_raw_rows_score_like_the_model_on_prepared_rows(bundle):
    out, cfg, batch = bundle["out"], bundle["cfg"], bundle["batch"]
    test = pq.read_table(out / "test")
    keys = set(test.column("row_key").to_pylist())
    raw = pq.read_table(bundle["src"])
    raw = raw.filter(pa.array([k in keys for k in raw.column("row_key").to_pylist()]))
    scorer = BundleScorer(bundle["dir"])
    got = scorer.score_raw(raw)
    with torch.no_grad():
        want = task_probabilities(bundle["model"](batch.dense, batch.sparse), cfg.tasks)
    assert batch.size == test.num_rows == raw.num_rows
    for task in want:
        torch.testing.assert_close(got[task], want[task], rtol=0, atol=1e-5)


def test_score_cli_on_raw_rows(bundle, tmp_path):
    out = tmp_path / "scores.parquet"
    assert main(["score", "--bundle", str(bundle["dir"]), "--data", str(bundle["src"]), "--raw",
                 "--out", str(out), "--keep", "row_key"]) == 0
    scored = pq.read_table(out)
    raw = pq.read_table(bundle["src"])
    assert scored.column("row_key").to_pylist() == raw.column("row_key").to_pylist()
    want = BundleScorer(bundle["dir"]).score_raw(raw)
    for task, p in want.items():
        np.testing.assert_allclose(scored.column(f"score_{task}").to_numpy(), p.numpy(),
                                   rtol=0, atol=1e-6)


def test_raw_input_errors(bundle, tmp_path):
    raw = pq.read_table(bundle["src"]).slice(0, 20)
    scorer = BundleScorer(bundle["dir"])
    with pytest.raises(BundleError, match="lacks raw column 'item'"):
        scorer.score_raw(raw.drop_columns(["item"]))
    as_float = raw.set_column(raw.schema.get_field_index("item"), "item",
                              raw.column("item").cast(pa.float64()))
    with pytest.raises(BundleError, match="column 'item' has double ids; expected integers or "
                                          "strings"):
        scorer.score_raw(as_float)
    slots = raw.column("slot").to_pylist()
    slots[1] = 8
    with pytest.raises(BundleError, match=r"column 'slot_id' has 1 id\(s\) outside \[0, 8\)"):
        scorer.score_raw(raw.set_column(raw.schema.get_field_index("slot"), "slot",
                                        pa.array(slots, pa.int64())))
    prices = raw.column("price").to_pylist()
    prices[4] = float("inf")
    with pytest.raises(BundleError, match="column 'price' has NaN or infinite values"):
        scorer.score_raw(raw.set_column(raw.schema.get_field_index("price"), "price",
                                        pa.array(prices, pa.float64())))
    strict = json.loads((bundle["dir"] / "raw/transforms.json").read_text())
    strict["nulls"]["sparse"] = "error"
    (tmp_path / "vocab").mkdir()
    (tmp_path / "vocab/item_id.parquet").write_bytes(
        (bundle["dir"] / "raw/vocab/item_id.parquet").read_bytes())
    (tmp_path / "transforms.json").write_text(json.dumps(strict))
    users = raw.column("user").to_pylist()
    users[2] = None
    with_null = raw.set_column(raw.schema.get_field_index("user"), "user", pa.array(users))
    with pytest.raises(BundleError, match=r"column 'user' has 1 null id\(s\)"):
        RawTransforms(tmp_path / "transforms.json").apply(with_null)


def test_a_bundle_without_transforms_refuses_raw_rows(smoke_cfg, tmp_path):
    model = build_model(smoke_cfg, seed=0).eval()
    reader = ParquetBatchReader(f"{smoke_cfg.data.root}/test", FeatureSchema.from_config(smoke_cfg), 8)
    batch = next(iter(reader.epoch(0)))
    manifest = export_bundle(model, smoke_cfg, tmp_path, model.pooled(batch.sparse).detach(),
                             batch.dense)
    assert manifest["raw_transforms"] is None
    with pytest.raises(BundleError, match="no raw transforms"):
        BundleScorer(tmp_path).score_raw(pa.table({"x": [1]}))
