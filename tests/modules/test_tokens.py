"""FeatureTokenizer against a float64 re-computation, and the builder's token layout."""

import numpy as np
import pytest
import torch

from recmtl.config import derive
from recmtl.models.builder import build_dense_ranker
from recmtl.models.features import input_blocks
from recmtl.modules.tokens import FeatureTokenizer


def test_tokens_match_a_float64_reference():
    torch.manual_seed(0)
    widths, scalars, dim = [3, 5, 2], 4, 6
    tok = FeatureTokenizer(block_widths=widths, num_scalars=scalars, dim=dim).double()
    x = torch.randn(7, sum(widths) + scalars, dtype=torch.float64)
    xn = x.numpy()
    want, start = [], 0
    for block, w in zip(tok.blocks, widths, strict=True):
        a, c = block.weight.detach().numpy(), block.bias.detach().numpy()
        want.append(xn[:, start:start + w] @ a.T + c)
        start += w
    sw, sb = tok.scalar_weight.detach().numpy(), tok.scalar_bias.detach().numpy()
    want += [xn[:, start + j, None] * sw[j] + sb[j] for j in range(scalars)]
    got = tok(x)
    assert got.shape == (7, len(widths) + scalars, dim) == (7, tok.num_tokens, tok.output_dim)
    np.testing.assert_allclose(got.detach().numpy(), np.stack(want, axis=1), rtol=1e-12, atol=1e-12)


def test_only_blocks_or_only_scalars_and_bad_widths():
    assert FeatureTokenizer(block_widths=[], num_scalars=3, dim=4)(torch.ones(2, 3)).shape == (2, 3, 4)
    assert FeatureTokenizer(block_widths=[2], num_scalars=0, dim=4)(torch.ones(2, 2)).shape == (2, 1, 4)
    with pytest.raises(ValueError, match=r"expected \[B, 5\]"):
        FeatureTokenizer(block_widths=[2], num_scalars=3, dim=4)(torch.ones(2, 6))
    with pytest.raises(ValueError, match="at least one"):
        FeatureTokenizer(block_widths=[], num_scalars=0, dim=4)


@pytest.mark.parametrize("interaction", ["dot", "none"])
def test_builder_gives_each_pooled_feature_and_dense_float_its_own_token(smoke_cfg, interaction):
    cfg = derive(smoke_cfg, {"model.arch": "multitab", "model.interaction": interaction})
    ranker = build_dense_ranker(cfg).double()
    num_sparse, num_dense, dim = len(cfg.features.sparse), len(cfg.features.dense), 8
    pairs = num_sparse * (num_sparse - 1) // 2
    assert input_blocks(cfg, ranker.interaction) == [dim] * num_sparse + [pairs] * (interaction == "dot")
    tokenizer = ranker.backbone.tokenizer
    pair_tokens = int(interaction == "dot")

    def tokens(pooled, dense):  # what the backbone reads, as DenseRanker builds it
        return tokenizer(torch.cat([ranker.interaction(pooled), dense], dim=1)).detach()

    pooled = torch.randn(5, num_sparse * dim, dtype=torch.float64)
    dense = torch.randn(5, num_dense, dtype=torch.float64)
    base = tokens(pooled, dense)
    assert base.shape == (5, num_sparse + pair_tokens + num_dense, cfg.model.multitab_dim)
    moved = pooled.clone()
    moved[:, 3 * dim:4 * dim] += 1.0  # the fourth sparse feature's embedding
    changed = (tokens(moved, dense) != base).any(-1).any(0)
    assert changed.nonzero().flatten().tolist() == ([3, num_sparse] if pair_tokens else [3])
    moved = dense.clone()
    moved[:, 2] += 1.0
    changed = (tokens(pooled, moved) != base).any(-1).any(0)
    assert changed.nonzero().flatten().tolist() == [num_sparse + pair_tokens + 2]
    assert ranker(pooled, dense)["ctr"].shape == (5,)
