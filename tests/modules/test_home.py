"""HoME: the feature gate starts at 1, the hierarchy mask holds, the formula, every switch."""

import copy

import pytest
import torch

from recmtl.config import ModelConfig
from recmtl.models.architecture import BackboneInputs
from recmtl.models.registry import ARCHITECTURES
from recmtl.modules.mlp import BatchedExperts, FeatureGate


def _home(**switches):
    cfg = ModelConfig(arch="home", num_experts=2, group_experts=1, task_experts=1,
                      expert_layers=(6, 4), task_groups=(("ctr", "like"), ("cvr",)), **switches)
    torch.manual_seed(0)
    return ARCHITECTURES["home"].build(cfg, BackboneInputs.flat(5), ["ctr", "cvr", "like"]).double()


def test_feature_gate_first_output_equals_its_input():
    torch.manual_seed(0)
    gate = FeatureGate(7, num_experts=3, rank=2)
    x = torch.randn(9, 7)
    out = gate(x)
    for e in range(3):
        assert torch.equal(out[e], x)
    out.sum().backward()
    assert gate.up.grad is not None and gate.up.grad.abs().sum() > 0  # it can move off 1


def test_normalised_experts_are_swish_of_batch_norm_in_float64():
    torch.manual_seed(0)
    experts = BatchedExperts(5, [4], num_experts=2, normalize=True).double().train()
    x = torch.randn(16, 5, dtype=torch.float64)
    out = experts(x)
    for e in range(2):
        h = x @ experts.weights[0][e] + experts.biases[0][e, 0]
        h = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + 1e-5)
        torch.testing.assert_close(out[e], h * torch.sigmoid(h))


def test_home_matches_its_formula():
    home = _home().eval()
    x = torch.randn(6, 5, dtype=torch.float64)

    def mix(gate, inp, experts):
        return torch.einsum("be,ebd->bd", torch.softmax(gate.proj(inp), -1), experts)

    def self_gate(gate, inp, experts):
        return torch.einsum("be,ebd->bd", torch.sigmoid(gate.proj(inp)), experts)

    g1 = home.global1(x)
    c1 = [e(x) for e in home.groups1]
    h = [mix(home.group_gates[c], x, torch.cat([g1, c1[c]])) + self_gate(home.group_self_gates[c], x, c1[c])
         for c in range(2)]
    h_global = mix(home.global_gate, x, torch.cat([g1, *c1]))
    g2 = home.global2(h_global)
    for t, c in enumerate([0, 1, 0]):
        own = home.tasks2[t](h[c])
        y = mix(home.task_gates[t], h[c], torch.cat([g2, home.groups2[c](h[c]), own]))
        y = y + self_gate(home.task_self_gates[t], h[c], own)
        torch.testing.assert_close(home(x)[t], y)


def test_hierarchy_mask_keeps_other_units_experts_out():
    home = _home().eval()
    x = torch.randn(6, 5, dtype=torch.float64)
    before = home(x).detach()
    for name, touched in (("tasks2.1", {1}), ("groups2.1", {1}), ("groups2.0", {0, 2})):
        changed = copy.deepcopy(home)
        with torch.no_grad():
            for p in changed.get_submodule(name).parameters():
                p.add_(0.5)
        after = changed(x).detach()
        for t in range(3):
            assert torch.equal(after[t], before[t]) == (t not in touched), (name, t)


@pytest.mark.parametrize("switches", [{}, {"expert_norm": False}, {"feature_gate": False},
                                      {"self_gate": False}, {"gate": "dselect_k"}])
def test_every_home_expert_and_gate_gets_gradient(switches):
    home = _home(**switches).float().train()
    out = home(torch.randn(32, 5))
    assert out.shape == (3, 32, 4)
    out.square().sum().backward()
    for name, p in home.named_parameters():
        if name.endswith("feature_gate.down"):  # its gradient flows through up, zero at init
            continue
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_switches_remove_their_parameters():
    names = {n for n, _ in _home().named_parameters()}
    assert any("feature_gate" in n for n in names) and any("self_gate" in n for n in names)
    assert not any("feature_gate" in n for n, _ in _home(feature_gate=False).named_parameters())
    assert not any("self_gates" in n for n, _ in _home(self_gate=False).named_parameters())
    assert not any("norms" in n for n, _ in _home(expert_norm=False).named_parameters())
