"""Expert-health probe against statistics computed directly from the gates and experts."""

import math

import pytest
import torch

from recmtl.modules.diagnostics import ExpertProbe, flat_metrics
from recmtl.modules.gates import SoftmaxGate
from recmtl.modules.mlp import BatchedExperts
from recmtl.modules.mmoe import MMoE


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
