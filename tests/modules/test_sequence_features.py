"""Jagged embeddings of the unpooled tables -> one block per feature, against float64 loops."""

import pytest
import torch
from torchrec.sparse.jagged_tensor import JaggedTensor

from recmtl.modules.sequence import TargetAttention
from recmtl.modules.sequence_features import SequenceFeatures, segment_pool


def _rows(values, lengths):
    starts = [0, *torch.cumsum(lengths, 0).tolist()]
    return [values[a:b] for a, b in zip(starts[:-1], starts[1:], strict=True)]


@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_segment_pool_matches_a_loop_and_gives_zeros_for_empty_rows(mode):
    torch.manual_seed(0)
    lengths = torch.tensor([3, 0, 1, 0, 5], dtype=torch.int32)
    values = torch.randn(int(lengths.sum()), 4, requires_grad=True)
    pooled = segment_pool(values, lengths, mode)
    expected = torch.stack([
        (r.double().sum(0) if mode == "sum" else r.double().mean(0)) if len(r)
        else torch.zeros(4, dtype=torch.float64) for r in _rows(values.detach(), lengths)])
    torch.testing.assert_close(pooled.double(), expected)
    pooled.sum().backward()
    assert values.grad is not None and torch.isfinite(values.grad).all()


def test_segment_pool_of_an_all_empty_batch_is_zeros():
    out = segment_pool(torch.zeros(0, 3), torch.zeros(2, dtype=torch.int64), "mean")
    assert torch.equal(out, torch.zeros(2, 3))


def test_sequence_features_pool_the_candidate_and_attend_over_the_recent_history():
    """The history block equals the attention unit run on hand-padded keys (the 2 most recent
    ids of a row), with the pooled candidate as query; an empty history gives exact zeros."""
    torch.manual_seed(1)
    attention = TargetAttention(embedding_dim=4, hidden_dims=[8])
    features = SequenceFeatures(pooling={"item": "sum"}, encoders={"hist": attention},
                                queries={"hist": "item"}, max_lens={"hist": 2})
    item = torch.randn(3, 4)
    hist_lengths = torch.tensor([3, 0, 1])
    hist = torch.randn(4, 4)
    out = features({"item": JaggedTensor(values=item, lengths=torch.ones(3, dtype=torch.int64)),
                    "hist": JaggedTensor(values=hist, lengths=hist_lengths)})
    torch.testing.assert_close(out["item"], item)
    keys = torch.zeros(3, 2, 4)
    keys[0] = hist[1:3]  # the 2 most recent of row 0, oldest first
    keys[2, 0] = hist[3]
    with torch.no_grad():
        expected = attention(item, keys, torch.tensor([2, 0, 1]))
    torch.testing.assert_close(out["hist"], expected)
    assert torch.equal(out["hist"][1], torch.zeros(4))
    assert features.output_dims == {"hist": 4}


def test_sequence_features_refuse_a_query_that_is_not_pooled():
    with pytest.raises(ValueError, match="not pooled"):
        SequenceFeatures(pooling={}, encoders={"hist": TargetAttention(4, [])},
                         queries={"hist": "item"}, max_lens={"hist": 2})


def test_a_side_list_is_added_to_the_keys_position_by_position():
    """With a side list (an age bucket per event), the keys are the history's padded
    embeddings plus the side's, slot by slot: the same recent-most cut applies to both."""
    torch.manual_seed(2)
    attention = TargetAttention(embedding_dim=3, hidden_dims=[4])
    features = SequenceFeatures(pooling={"item": "sum", "age": "sum"},
                                encoders={"hist": attention}, queries={"hist": "item"},
                                max_lens={"hist": 2}, sides={"hist": ("age",)})
    lengths = torch.tensor([3, 0, 1])
    item, hist, age = torch.randn(3, 3), torch.randn(4, 3), torch.randn(4, 3)
    out = features({"item": JaggedTensor(values=item, lengths=torch.ones(3, dtype=torch.int64)),
                    "hist": JaggedTensor(values=hist, lengths=lengths),
                    "age": JaggedTensor(values=age, lengths=lengths)})
    keys = torch.zeros(3, 2, 3, dtype=torch.float64)
    keys[0] = (hist[1:3] + age[1:3]).double()
    keys[2, 0] = (hist[3] + age[3]).double()
    with torch.no_grad():
        expected = attention.double()(item.double(), keys, torch.tensor([2, 0, 1]))
    torch.testing.assert_close(out["hist"].double(), expected)
    torch.testing.assert_close(out["age"], age[[0, 1, 2]].new_tensor(
        [(age[0] + age[1] + age[2]).tolist(), [0.0] * 3, age[3].tolist()]))


def test_sides_must_belong_to_a_sequence():
    with pytest.raises(ValueError, match="not sequences"):
        SequenceFeatures(pooling={"item": "sum"}, encoders={"hist": TargetAttention(4, [])},
                         queries={"hist": "item"}, max_lens={"hist": 2}, sides={"item": ("x",)})
