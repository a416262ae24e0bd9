"""The new-id slice: its AUC is sklearn's on the rows picked by hand, and the masks read from
raw rows through a bundle's transforms equal the ones read from the prepared ids."""

import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from recmtl.config import TaskConfig
from recmtl.export.inputs import BundleError
from recmtl.export.new_ids import new_id_mask, new_id_masks
from recmtl.metrics.new_ids import masks_from_ids, new_id_figures, new_id_slices
from recmtl.metrics.report import build_report
from tests.raw_export import prepare_vocab_store

TASKS = (TaskConfig(name="ctr", label="click"),
         TaskConfig(name="cvr", label="conversion", space="click"))


def _rows(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    click = (rng.random(n) < 0.4).astype(float)
    cols = {"click": click, "conversion": click * (rng.random(n) < 0.5),
            "pred/ctr": rng.random(n), "pred/cvr": rng.random(n)}
    ids = {"user_id": rng.integers(0, 20, n), "item_id": rng.integers(0, 10, n)}
    return cols, ids


def test_the_slice_auc_is_sklearns_on_the_new_rows():
    cols, ids = _rows()
    masks = masks_from_ids(ids)
    new = [i for i in range(len(cols["click"]))
           if ids["user_id"][i] == 0 or ids["item_id"][i] == 0]  # by hand, row by row
    clicked_new = [i for i in new if cols["click"][i] == 1]
    want_ctr = roc_auc_score(cols["click"][new], cols["pred/ctr"][new])
    want_cvr = roc_auc_score(cols["conversion"][clicked_new], cols["pred/cvr"][clicked_new])

    figures = new_id_figures(TASKS, cols, masks)
    assert figures["rows"] == len(new)
    assert figures["features"] == {"user_id": int((ids["user_id"] == 0).sum()),
                                   "item_id": int((ids["item_id"] == 0).sum())}
    assert figures["tasks"]["ctr"]["auc"] == pytest.approx(want_ctr, abs=1e-12)
    assert figures["tasks"]["cvr"]["auc"] == pytest.approx(want_cvr, abs=1e-12)
    assert figures["tasks"]["cvr"]["rows"] == len(clicked_new)

    report = build_report(TASKS, cols, bootstrap=0, slices=new_id_slices(masks))
    for task, want in (("ctr", want_ctr), ("cvr", want_cvr)):
        entry = {e["value"]: e for e in report["tasks"][task]["slices"]["new_ids"]}
        assert entry[True]["auc"] == pytest.approx(want, abs=1e-12)
    item = {e["value"]: e for e in report["tasks"]["ctr"]["slices"]["new_ids:item_id"]}
    rows = [i for i in range(len(cols["click"])) if ids["item_id"][i] == 0]
    assert item[True]["rows"] == len(rows)
    assert item[True]["auc"] == pytest.approx(
        roc_auc_score(cols["click"][rows], cols["pred/ctr"][rows]), abs=1e-12)


def test_raw_and_prepared_masks_agree(tmp_path):
    out = prepare_vocab_store(tmp_path, split={"kind": "time", "column": "ts",
                                               "valid_from": "2026-11-05",
                                               "test_from": "2026-11-08"})
    bundle = tmp_path / "bundle"
    (bundle / "raw").mkdir(parents=True)
    shutil.copy(out / "transforms.json", bundle / "raw" / "transforms.json")
    shutil.copytree(out / "vocab", bundle / "raw" / "vocab")
    prepared = pa.concat_tables([pq.read_table(out / s) for s in ("train", "valid", "test")]
                                ).sort_by("row_key")
    raw = pa.concat_tables([pq.read_table(p) for p in sorted((tmp_path / "export").iterdir())]
                           ).sort_by("row_key")
    want = masks_from_ids({f: prepared.column(f).to_numpy() for f in ("user_id", "item_id")})
    got = new_id_masks(bundle, raw)
    assert set(got) == set(want)
    for f in want:
        np.testing.assert_array_equal(got[f], want[f], err_msg=f)
    assert want["item_id"].any() and want["user_id"].any()  # values first seen after train
    np.testing.assert_array_equal(new_id_mask(bundle, raw), want["item_id"] | want["user_id"])


def test_a_bundle_without_raw_transforms_is_refused(tmp_path):
    with pytest.raises(BundleError, match="no raw transforms"):
        new_id_mask(tmp_path, pa.table({"user": ["a"]}))
