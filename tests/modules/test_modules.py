import torch

from recmtl.modules.gates import SoftmaxGate
from recmtl.modules.interaction import DotInteraction
from recmtl.modules.mlp import BatchedExperts
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
