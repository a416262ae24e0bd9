"""Known-answer equivalences between backbones, with weights copied across."""

import torch

from recmtl.modules.gates import SoftmaxGate
from recmtl.modules.mlp import MLP, BatchedExperts
from recmtl.modules.mmoe import MMoE
from recmtl.modules.ple import PLE, CGCLevel
from recmtl.modules.shared_bottom import SharedBottom


def test_mmoe_with_one_expert_equals_shared_bottom():
    torch.manual_seed(0)
    experts = BatchedExperts(6, [5, 3], num_experts=1).double()
    mmoe = MMoE(experts, SoftmaxGate(6, num_gates=2, num_experts=1)).double()
    bottom = MLP(6, [5, 3]).double()
    linears = [m for m in bottom.layers if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for lin, w, b in zip(linears, experts.weights, experts.biases, strict=True):
            lin.weight.copy_(w[0].T)
            lin.bias.copy_(b[0, 0])
    x = torch.randn(9, 6, dtype=torch.float64)
    torch.testing.assert_close(mmoe(x), SharedBottom(bottom, num_tasks=2)(x))


def test_cgc_without_task_experts_equals_mmoe():
    torch.manual_seed(0)
    experts = BatchedExperts(6, [4], num_experts=3).double()
    mmoe = MMoE(experts, SoftmaxGate(6, num_gates=2, num_experts=3)).double()
    level = CGCLevel([None, None], experts, [SoftmaxGate(6, 1, 3) for _ in range(2)],
                     shared_gate=None).double()
    with torch.no_grad():
        for t, gate in enumerate(level.gates):
            gate.proj.weight.copy_(mmoe.gate.proj.weight[t * 3:(t + 1) * 3])
            gate.proj.bias.copy_(mmoe.gate.proj.bias[t * 3:(t + 1) * 3])
    x = torch.randn(8, 6, dtype=torch.float64)
    torch.testing.assert_close(PLE([level], num_tasks=2)(x), mmoe(x))


def _ple(num_tasks=2):
    levels = []
    for last in (False, True):
        width = 6 if not levels else 4
        task = [BatchedExperts(width, [4], 2) for _ in range(num_tasks)]
        shared = BatchedExperts(width, [4], 3)
        gates = [SoftmaxGate(width, 1, 2 + 3) for _ in range(num_tasks)]
        shared_gate = None if last else SoftmaxGate(width, 1, num_tasks * 2 + 3)
        levels.append(CGCLevel(task, shared, gates, shared_gate))
    return PLE(levels, num_tasks)


def test_ple_every_expert_and_gate_gets_gradient():
    torch.manual_seed(0)
    ple = _ple()
    out = ple(torch.randn(16, 6))
    assert out.shape == (2, 16, 4)
    out.sum().backward()
    for name, p in ple.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_ple_task_output_is_its_gate_mixture_at_the_last_level():
    torch.manual_seed(1)
    ple = _ple().double()
    x = torch.randn(5, 6, dtype=torch.float64)
    first, last = ple.levels
    task_in, shared_in = first([x, x], x)
    for t in range(2):
        experts = torch.cat([last.task_experts[t](task_in[t]), last.shared_experts(shared_in)])
        w = torch.softmax(last.gates[t].proj(task_in[t]), dim=-1)
        expected = (w.T.unsqueeze(-1) * experts).sum(0)
        torch.testing.assert_close(ple(x)[t], expected)
