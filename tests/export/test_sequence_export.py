"""Export parity of behaviour-sequence models: a DIN and a BST bundle (torch.export and ONNX,
dynamic batch and dynamic total history length) score like the model they came from over
batch sizes 1, 3, 17 and histories all empty, mixed, at and beyond ``max_len``; raw
feature-store rows with list columns score like the rows ``recmtl prepare`` wrote.

The store is `recmtl prepare`'s output of a raw export with a history column (lists of 0..7
ids, cut to their 3 most recent by prepare), its config given a DIN or BST ``sequence:``."""

import json
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from pipelines.feature_store.prepare import prepare
from pipelines.jobs.export import export
from recmtl.config import SequenceConfig, derive, load_config
from recmtl.data.reader import ParquetBatchReader
from recmtl.data.schema import FeatureSchema
from recmtl.export.parity import check_parity
from recmtl.export.scorer import BundleError, BundleScorer
from recmtl.losses import task_probabilities
from recmtl.models.builder import build_model
from tests.raw_export import write_export, write_spec
from tests.test_prepare_sequences import DENSE, MAX_LEN, SPARSE, N, _columns


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("seq_store")
    cols = _columns(seed=1) | {"row_key": np.arange(N)}
    src = write_export(tmp, cols, split_at=N // 2)
    prepare(write_spec(tmp, src, sparse=SPARSE, dense=DENSE, group=None, keep=["ts", "row_key"]))
    return src, tmp / "out"


def _with_sequence(cfg, encoder):
    seq = SequenceConfig(query="item_id", max_len=MAX_LEN, encoder=encoder, num_heads=2,
                         ffn_dim=8, attention_layers=(8,))
    return derive(cfg, {"features.sparse": [replace(f, sequence=seq) if f.name == "hist_items"
                                           else f for f in cfg.features.sparse]})


@pytest.fixture(scope="module", params=["din", "bst"])
def bundle(request, store, tmp_path_factory):
    """Written by the export job `recmtl train` ends with (its parity check on held-out rows
    included); one scorer per backend, loaded once."""
    src, out = store
    cfg = _with_sequence(load_config(out / "shop.yaml", ["export.parity_rows=10000"]),
                         request.param)
    model = build_model(cfg, seed=5).eval()
    reader = ParquetBatchReader(str(out / "test"), FeatureSchema.from_config(cfg), 10_000)
    batch = next(iter(reader.epoch(0)))
    path = tmp_path_factory.mktemp(f"bundle_{request.param}")
    exported = export(cfg, "unused: the model is given", path, model=model)
    return {"cfg": cfg, "model": model, "batch": batch, "dir": path, "exported": exported,
            "manifest": exported["manifest"], "src": src, "out": out,
            "scorers": {b: BundleScorer(path, b) for b in ("torch", "onnx")}}


def test_manifest_names_the_history_inputs(bundle):
    manifest = bundle["manifest"]
    assert manifest["inputs"] == ["pooled", "dense", "hist_items_values", "hist_items_lengths"]
    seq = {f["name"]: f["sequence"] for f in manifest["sparse_features"]}
    assert seq["hist_items"] == {"query": "item_id", "max_len": MAX_LEN, "side": [],
                                 "encoder": bundle["cfg"].features.sparse[1].sequence.encoder}
    assert seq["item_id"] is None and seq["hist_cats"] is None
    # The history's table is served like the bags' (one copy, shared with the candidate).
    assert {t["name"] for t in manifest["tables"]} == {"item_id", "hist_cats"}
    assert manifest["pooled_width"] == 16  # item_id + hist_cats; the history is an input


def test_export_job_checks_parity_on_held_out_rows(bundle):
    b = bundle
    parity = json.loads((b["dir"] / "parity.json").read_text())
    assert parity["rows"] == b["batch"].size > 20  # the whole test split
    assert set(parity["max_abs_diff"]) == {"torch", "onnx"}
    for backend, scorer in b["scorers"].items():
        diffs = check_parity(b["model"], scorer, b["batch"], b["cfg"].tasks, atol=1e-5)
        assert set(diffs) == {t.name for t in b["cfg"].tasks} and len(diffs) >= 2
        assert max(parity["max_abs_diff"][backend].values()) <= 1e-5


# Histories per row: every one empty, a mix (empty, short, at and beyond max_len), all at
# max_len. Lengths beyond max_len keep their most recent ids, in the graph as in training.
LENGTHS = {"empty": lambda b: [0] * b,
           "mixed": lambda b: [(0, 1, MAX_LEN, MAX_LEN + 4, 2)[i % 5] for i in range(b)],
           "max_len": lambda b: [MAX_LEN] * b}


def _kjt_and_csr(cfg, lengths, rng, aligned=()):
    """Random ids for every feature (``lengths`` for the history and the ``aligned`` lists,
    one id elsewhere except the hashed list, 0..2): the same rows as a KeyedJaggedTensor and as
    the scorer's CSR."""
    sizes = {t.name: t.num_embeddings for t in cfg.features.tables}
    rows = len(lengths)
    per = {}
    for f in cfg.features.sparse:
        n = (lengths if f.name == "hist_items" or f.name in aligned else
             rng.integers(0, 3, rows).tolist() if f.multi_valued else [1] * rows)
        per[f.name] = (torch.from_numpy(rng.integers(0, sizes[f.table], sum(n))),
                       torch.tensor(n, dtype=torch.int64))
    names = [f.name for f in cfg.features.sparse]
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=names, values=torch.cat([per[k][0] for k in names]),
        lengths=torch.cat([per[k][1] for k in names]))
    csr = {k: (v, torch.cat([torch.zeros(1, dtype=torch.int64), n.cumsum(0)]))
           for k, (v, n) in per.items()}
    return kjt, csr


def _scores_match(scorer, model, cfg, lengths, rng, aligned=()):
    """Random rows with these history ``lengths`` scored by the bundle and by the model: the
    probabilities agree to 1e-5. Returns the rows (KJT, CSR, dense) and the bundle's scores."""
    rows = len(lengths)
    kjt, csr = _kjt_and_csr(cfg, lengths, rng, aligned=aligned)
    dense = torch.from_numpy(rng.normal(size=(rows, len(cfg.features.dense)))
                             .astype(np.float32))
    got = scorer.score(csr, dense)
    with torch.no_grad():
        want = task_probabilities(model(dense, kjt), cfg.tasks)
    for task in want:
        torch.testing.assert_close(got[task], want[task], rtol=0, atol=1e-5,
                                   msg=lambda m, t=task: f"{rows} rows, {t}: {m}")
    return kjt, csr, dense, got


@pytest.mark.parametrize("backend", ["torch", "onnx"])
@pytest.mark.parametrize("pattern", sorted(LENGTHS))
def test_parity_over_batch_sizes_and_history_lengths(bundle, backend, pattern):
    cfg, model = bundle["cfg"], bundle["model"]
    for rows in (1, 3, 17):
        kjt, _, _, _ = _scores_match(bundle["scorers"][backend], model, cfg,
                                     LENGTHS[pattern](rows), np.random.default_rng(rows))
        if pattern == "empty":  # an empty history adds nothing: the encoder's block is zero
            blocks = model.sequence_features(model.sequence_embeddings(kjt))
            assert torch.equal(blocks["hist_items"], torch.zeros(rows, 8))


def test_history_order_matters_and_offsets_are_checked(bundle):
    """Reversing a history changes the score (the graph reads the most recent ids, and BST
    their positions), and offsets that do not cover the ids are refused."""
    cfg = bundle["cfg"]
    kjt, csr = _kjt_and_csr(cfg, [MAX_LEN + 2], np.random.default_rng(0))
    scorer = bundle["scorers"]["torch"]
    dense = torch.zeros(1, len(cfg.features.dense))
    values, offsets = csr["hist_items"]
    task = cfg.tasks[0].name
    a = scorer.score(csr, dense)[task]
    b = scorer.score(csr | {"hist_items": (values.flip(0), offsets)}, dense)[task]
    assert not torch.equal(a, b)
    with pytest.raises(BundleError, match="offsets must run from 0"):
        scorer.score(csr | {"hist_items": (values[:-1], offsets)}, dense)


def test_raw_rows_with_list_columns_score_like_prepared_rows(bundle):
    """Raw lists (nulls, up to 7 ids) go through the bundle's replay of prepare (vocabulary,
    hash, the cut to the 3 most recent): scores equal those of the rows prepare wrote, and
    of the model on them."""
    b = bundle
    test = pq.read_table(b["out"] / "test")
    raw = pq.read_table(b["src"])
    keys = test.column("row_key").to_pylist()
    raw = raw.take(pa.array([raw.column("row_key").to_pylist().index(k) for k in keys]))
    lengths = [len(v or []) for v in raw.column("hist_items").to_pylist()]
    assert max(lengths) > MAX_LEN and min(lengths) == 0  # cut rows and empty/null histories
    scorer = b["scorers"]["onnx"]
    got = scorer.score_raw(raw)
    prepared = scorer.score_rows(test)
    with torch.no_grad():
        want = task_probabilities(b["model"](b["batch"].dense, b["batch"].sparse), b["cfg"].tasks)
    for task in want:
        torch.testing.assert_close(got[task], prepared[task], rtol=0, atol=1e-6)
        torch.testing.assert_close(got[task], want[task], rtol=0, atol=1e-5)


def test_a_null_history_scores_as_an_empty_one(bundle):
    """As training reads it; a null id inside a history is an error naming the column."""
    test = pq.read_table(bundle["out"] / "test").slice(0, 4)
    at = test.schema.get_field_index("hist_items")
    kind = test.schema.field("hist_items").type
    rest = test.column("hist_items").to_pylist()[1:]
    scorer = bundle["scorers"]["torch"]
    nulled = scorer.score_rows(test.set_column(at, "hist_items", pa.array([None, *rest], kind)))
    empty = scorer.score_rows(test.set_column(at, "hist_items", pa.array([[], *rest], kind)))
    for task in empty:
        assert torch.equal(nulled[task], empty[task])
    with pytest.raises(BundleError, match=r"column 'hist_items' has 1 null id\(s\) inside"):
        scorer.score_rows(test.set_column(at, "hist_items", pa.array([[1, None], *rest], kind)))


def test_side_lists_reach_the_keys_in_the_bundle(store, tmp_path):
    """A side list (``sequence.side``: here the hashed list, one id per event) is added to its
    history's keys in training; the scorer adds its embeddings to the history's values, so
    both backends match the model, and a side list of another length is refused by row."""
    from recmtl.export.bundle import export_bundle

    _, out = store
    seq = SequenceConfig(query="item_id", max_len=MAX_LEN, attention_layers=(8,),
                         side=("hist_cats",))
    cfg = load_config(out / "shop.yaml")
    cfg = derive(cfg, {"features.sparse": [replace(f, sequence=seq) if f.name == "hist_items"
                                          else f for f in cfg.features.sparse]})
    model = build_model(cfg, seed=7).eval()
    rng = np.random.default_rng(3)
    kjt, _ = _kjt_and_csr(cfg, LENGTHS["mixed"](5), rng, aligned=("hist_cats",))
    dense = torch.from_numpy(rng.normal(size=(5, len(cfg.features.dense))).astype(np.float32))
    export_bundle(model, cfg, tmp_path, model.pooled(kjt).detach(), dense)
    for backend in ("torch", "onnx"):
        scorer = BundleScorer(tmp_path, backend)
        for rows in (1, 17):
            _, csr, dense, got = _scores_match(scorer, model, cfg, LENGTHS["mixed"](rows), rng,
                                               aligned=("hist_cats",))
    without_side = scorer.score(csr | {"hist_cats": (csr["hist_cats"][0] * 0, csr["hist_cats"][1])},
                                dense)
    assert not torch.equal(without_side[cfg.tasks[0].name], got[cfg.tasks[0].name])
    values, offsets = csr["hist_cats"]
    shifted = offsets.clone()
    shifted[1:-1] = offsets[2:]  # row 0 takes row 1's ids: lengths no longer match
    with pytest.raises(BundleError, match=r"feature 'hist_cats': row 0 holds .* ids, but its "
                                          r"sequence 'hist_items' holds"):
        scorer.score(csr | {"hist_cats": (values, shifted)}, dense)


@pytest.mark.parametrize("arch", ["dtrn", "infnet"])
def test_dot_products_beside_histories_export_with_parity(store, tmp_path, arch):
    """On the sequence store with ``interaction: dot``, DTRN (each task's pair products, its
    own interest included) and INFNet (pairs of the features, the histories' item tokens left
    out) score alike in both backends, over mixed history lengths and odd batch sizes."""
    _, out = store
    cfg = _with_sequence(load_config(out / "shop.yaml", ["export.parity_rows=10000",
                                                         f"model.arch={arch}",
                                                         "model.interaction=dot"]), "din")
    model = build_model(cfg, seed=5).eval()
    if arch == "dtrn":
        assert model.dense_ranker.backbone.pairs
    else:
        assert model.dense_ranker.interaction.columns is not None
    exported = export(cfg, "unused: the model is given", tmp_path, model=model)
    parity = json.loads((tmp_path / "parity.json").read_text())
    assert exported["manifest"] and set(parity["max_abs_diff"]) == {"torch", "onnx"}
    for backend in ("torch", "onnx"):
        assert max(parity["max_abs_diff"][backend].values()) <= 1e-5
        scorer = BundleScorer(tmp_path, backend)
        for rows in (1, 17):
            _scores_match(scorer, model, cfg, LENGTHS["mixed"](rows), np.random.default_rng(rows))
