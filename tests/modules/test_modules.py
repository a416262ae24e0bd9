import copy

import pytest
import torch

from recmtl.data.reader import ParquetBatchReader
from recmtl.data.schema import FeatureSchema
from recmtl.models.builder import build_model
from recmtl.modules import mlp
from recmtl.modules.gates import SoftmaxGate
from recmtl.modules.interaction import DotInteraction
from recmtl.modules.mlp import BatchedExperts, _batched_linear
from recmtl.modules.mmoe import MMoE


def test_batched_experts_match_a_loop_of_linear_layers_in_float64():
    torch.manual_seed(0)
    experts = BatchedExperts(in_features=7, layer_sizes=[5, 3], num_experts=4).double()
    x = torch.randn(11, 7, dtype=torch.float64)
    out = experts(x)
    for e in range(4):
        h = x
        for w, b in zip(experts.weights, experts.biases, strict=True):
            h = torch.relu(h @ w[e] + b[e, 0])
        torch.testing.assert_close(out[e], h)


def test_bf16_batched_linear_gradients_match_float64_on_the_same_inputs():
    torch.manual_seed(0)
    h = torch.randn(3, 64, 32).bfloat16().requires_grad_()
    w = torch.randn(3, 32, 16, requires_grad=True)
    b = torch.randn(3, 1, 16, requires_grad=True)
    g = torch.randn(3, 64, 16).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = _batched_linear(h, w, b)
    out.backward(g)
    # float64 on exactly what the bfloat16 kernels saw (autocast rounds w to bfloat16)
    h64, w64, g64 = h.detach().double(), w.detach().bfloat16().double(), g.double()
    want = {"h": g64 @ w64.transpose(1, 2), "w": h64.transpose(1, 2) @ g64,
            "b": g64.sum(1, keepdim=True)}
    for name, got in (("h", h.grad), ("w", w.grad), ("b", b.grad)):
        assert got.dtype == {"h": torch.bfloat16, "w": torch.float32, "b": torch.float32}[name]
        scale = want[name].abs().max().item()  # bfloat16 outputs: 8 bits of mantissa
        torch.testing.assert_close(got.double(), want[name], rtol=0, atol=8e-3 * scale, msg=name)


@pytest.mark.parametrize("shared_input", [True, False])
def test_batched_experts_under_bf16_autocast_equal_stock_baddbmm(shared_input, monkeypatch):
    torch.manual_seed(0)
    experts = BatchedExperts(in_features=24, layer_sizes=[32, 16], num_experts=3)
    stock = copy.deepcopy(experts)
    x = torch.randn(64, 24) if shared_input else torch.randn(3, 64, 24)
    upstream = torch.randn(3, 64, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = experts(x)
    (out.float() * upstream).sum().backward()
    monkeypatch.setattr(mlp, "_batched_linear", lambda h, w, b: torch.baddbmm(b, h, w))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reference = stock(x)
    (reference.float() * upstream).sum().backward()
    torch.testing.assert_close(out, reference)
    for (name, p), q in zip(experts.named_parameters(), stock.parameters(), strict=True):
        scale = q.grad.abs().max().item()
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=8e-3 * scale, msg=name)


def test_mmoe_is_gate_weighted_sum_of_experts():
    torch.manual_seed(0)
    experts = BatchedExperts(6, [4], num_experts=3).double()
    mmoe = MMoE(experts, SoftmaxGate(6, num_gates=2, num_experts=3)).double()
    x = torch.randn(5, 6, dtype=torch.float64)
    gates = mmoe.gate(x)
    torch.testing.assert_close(gates.sum(-1), torch.ones(2, 5, dtype=torch.float64))
    expected = torch.stack([sum(gates[t, :, e:e + 1] * experts(x)[e] for e in range(3))
                            for t in range(2)])
    torch.testing.assert_close(mmoe(x), expected)


def test_mmoe_every_expert_and_gate_gets_gradient():
    torch.manual_seed(0)
    mmoe = MMoE(BatchedExperts(6, [8, 4], num_experts=3), SoftmaxGate(6, 2, 3))
    mmoe(torch.randn(32, 6)).sum().backward()
    for name, p in mmoe.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_dot_interaction_hand_worked():
    pooled = torch.tensor([[1.0, 2.0, 3.0, 4.0, 0.0, 1.0]])  # F=3 features of D=2
    out = DotInteraction(num_features=3, dim=2)(pooled)
    # pairs (0,1)=1*3+2*4=11, (0,2)=0+2=2, (1,2)=0+4=4
    torch.testing.assert_close(out, torch.tensor([[1.0, 2.0, 3.0, 4.0, 0.0, 1.0, 11.0, 2.0, 4.0]]))


def test_dot_interaction_over_some_blocks_hand_worked():
    # Blocks [a: 2 | history slots: 3 | b: 2 | c: 2]; only a, b, c are paired.
    pooled = torch.tensor([[1.0, 2.0, 9.0, 9.0, 9.0, 3.0, 4.0, 0.0, 1.0]])
    dot = DotInteraction(num_features=3, dim=2, block_widths=[2, 3, 2, 2], features=[0, 2, 3])
    assert dot.output_dim == 9 + 3
    torch.testing.assert_close(dot(pooled), torch.cat([pooled, torch.tensor([[11.0, 2.0, 4.0]])], 1))
    with pytest.raises(ValueError, match="expected 2 blocks of width 2"):
        DotInteraction(num_features=2, dim=2, block_widths=[2, 3], features=[0, 1])


def test_towers_and_heads_run_in_float32_under_bf16_autocast(smoke_cfg):
    model = build_model(smoke_cfg, seed=0)
    reader = ParquetBatchReader(f"{smoke_cfg.data.root}/test", FeatureSchema.from_config(smoke_cfg), 16)
    batch = next(iter(reader.epoch(0)))
    ranker, pooled, dense = model.dense_ranker, model.pooled(batch.sparse).detach(), batch.dense
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ranker(pooled, dense)
        per_task = ranker.backbone(torch.cat([ranker.interaction(pooled), dense], dim=1))
    assert per_task.dtype == torch.bfloat16  # the experts did run in bfloat16
    want = ranker._heads(per_task.float())  # float32 towers on the same backbone output
    for name, logit in out.items():
        assert logit.dtype == torch.float32
        torch.testing.assert_close(logit, want[name], rtol=0, atol=0)
