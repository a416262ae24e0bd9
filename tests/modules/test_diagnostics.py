"""Expert-health probe against statistics computed directly from the gates and experts."""

import math

import pytest
import torch

from recmtl.modules.diagnostics import ExpertProbe, flat_metrics
from recmtl.modules.gates import SoftmaxGate
from recmtl.modules.mlp import BatchedExperts
from recmtl.modules.mmoe import MMoE
from recmtl.modules.sparse_moe import TaskSparseMoE


def test_probe_sums_gate_mass_entropy_and_dead_share_over_batches():
    torch.manual_seed(0)
    mmoe = MMoE(BatchedExperts(6, [5], num_experts=3), SoftmaxGate(6, num_gates=2, num_experts=3))
    xs = [torch.randn(7, 6), torch.randn(4, 6)]
    probe = ExpertProbe(mmoe)
    with probe:
        for x in xs:
            mmoe(x)
    mmoe(torch.randn(3, 6))  # outside the probe: not counted
    summary = probe.summary()
    w = torch.cat([mmoe.gate(x) for x in xs], dim=1).double()  # [G, 11, E]
    gate = {k: torch.tensor(v, dtype=torch.float64) for k, v in summary["gates"]["gate"].items()}
    torch.testing.assert_close(gate["mass"], w.mean(1))
    torch.testing.assert_close(gate["entropy"], -(w * w.log()).sum(-1).mean(1))
    out = torch.cat([mmoe.experts(x) for x in xs], dim=1)
    dead = (out == 0).double().mean((1, 2))  # ReLU: non-positive means exactly zero
    share = summary["experts"]["experts"]["nonpositive_share"]
    torch.testing.assert_close(torch.tensor(share, dtype=torch.float64), dead)
    metrics = flat_metrics(summary)
    assert metrics["diag/gate/gate/1/mass_e2"] == pytest.approx(w[1, :, 2].mean().item())
    assert all(0 <= metrics[f"diag/gate/gate/{g}/entropy"] <= math.log(3) for g in range(2))


def test_a_collapsed_gate_has_zero_entropy_and_all_mass_on_one_expert():
    gate = SoftmaxGate(4, num_gates=1, num_experts=3)
    with torch.no_grad():
        gate.proj.weight.zero_()
        gate.proj.bias.copy_(torch.tensor([0.0, 100.0, 0.0]))
    mmoe = MMoE(BatchedExperts(4, [2], 3), gate)
    probe = ExpertProbe(mmoe)
    with probe:
        mmoe(torch.randn(5, 4))
    g = probe.summary()["gates"]["gate"]
    assert g["mass"][0] == pytest.approx([0.0, 1.0, 0.0], abs=1e-12)
    assert g["entropy"][0] == pytest.approx(0.0, abs=1e-12)


def test_a_sparse_router_reports_top_k_mass_utilisation_and_drops():
    """Task routing: each task's own picks (sample routing's shared picks: test_sparse_moe)."""
    torch.manual_seed(0)
    moe = TaskSparseMoE(experts=BatchedExperts(6, [4], num_experts=5), in_features=6,
                        num_tasks=2, k=2, routing="task")
    xs = [torch.randn(9, 6), torch.randn(4, 6)]
    probe = ExpertProbe(moe)
    with probe:
        for x in xs:
            moe(x)
    g = probe.summary()["gates"]["router"]
    logits = torch.cat([moe.router(x).view(len(x), 2, 5).transpose(0, 1) for x in xs], 1).double()
    top, idx = logits.topk(2, dim=-1)  # [T, 13, 2]
    gates = torch.zeros_like(logits).scatter(-1, idx, torch.softmax(top, -1))
    picks = torch.zeros_like(logits).scatter(-1, idx, 1.0)
    torch.testing.assert_close(torch.tensor(g["mass"], dtype=torch.float64), gates.mean(1))
    torch.testing.assert_close(torch.tensor(g["utilisation"], dtype=torch.float64),
                               picks.mean(1) / 2)
    entropy = -(gates * gates.clamp(min=1e-12).log()).sum(-1).mean(1)
    torch.testing.assert_close(torch.tensor(g["entropy"], dtype=torch.float64), entropy)
    assert g["dropped"] == [0.0, 0.0] and g["rows"] == 13
    metrics = flat_metrics(probe.summary())
    assert metrics["diag/gate/router/1/utilisation_e4"] == pytest.approx(picks[1, :, 4].mean() / 2)
    assert metrics["diag/gate/router/0/dropped"] == 0.0

    capped = TaskSparseMoE(experts=BatchedExperts(6, [4], num_experts=5), in_features=6,
                           num_tasks=2, k=2, capacity_factor=0.5)
    probe = ExpertProbe(capped)
    with probe:
        capped(torch.randn(20, 6))
    g = probe.summary()["gates"]["router"]
    assert min(g["dropped"]) > 0 and max(sum(row) for row in g["mass"]) < 1
    assert [sum(row) for row in g["utilisation"]] == pytest.approx([1.0, 1.0])
