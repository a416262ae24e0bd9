"""Gates against independent float64 re-computations."""

import itertools
import math

import numpy as np
import torch

from recmtl.modules.gates import DSelectKGate, SoftmaxGate, smooth_step


def _smooth_step_reference(t: float, gamma: float) -> float:
    if t <= -gamma / 2:
        return 0.0
    if t >= gamma / 2:
        return 1.0
    return -2 / gamma**3 * t**3 + 3 / (2 * gamma) * t + 0.5


def test_smooth_step_matches_the_paper_and_is_continuous_at_the_edges():
    t = torch.tensor([-2.0, -0.5, -0.2, 0.0, 0.3, 0.5, 3.0], dtype=torch.float64)
    expected = [_smooth_step_reference(v, 1.0) for v in t.tolist()]
    np.testing.assert_allclose(smooth_step(t, 1.0).numpy(), expected, atol=1e-12)
    assert smooth_step(torch.tensor(-0.5, dtype=torch.float64), 1.0).item() == 0.0
    assert abs(_smooth_step_reference(0.4999999, 1.0) - 1.0) < 1e-6


def test_dselect_k_matches_a_brute_force_float64_reference():
    torch.manual_seed(0)
    gates, experts, k = 2, 5, 2  # 5 experts: 3 bits, codes 5..7 fold onto experts 0..2
    gate = DSelectKGate(6, gates, experts, k=k, gamma=1.0).double()
    x = torch.randn(4, 6, dtype=torch.float64)
    out = gate(x).detach().numpy()  # [G, B, E]
    z = gate.codes_proj(x).detach().numpy().reshape(4, gates, k, 3)
    alpha = gate.mix_proj(x).detach().numpy().reshape(4, gates, k)
    for b, g in itertools.product(range(4), range(gates)):
        weights = np.zeros(experts)
        mix = np.exp(alpha[b, g]) / np.exp(alpha[b, g]).sum()
        for i in range(k):
            s = [_smooth_step_reference(v, 1.0) for v in z[b, g, i]]
            for code in range(8):
                prob = math.prod(s[j] if (code >> j) & 1 else 1 - s[j] for j in range(3))
                weights[code % experts] += mix[i] * prob
        np.testing.assert_allclose(out[g, b], weights, atol=1e-12)
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-12)


def test_dselect_k_saturated_bits_select_at_most_k_experts():
    torch.manual_seed(1)
    gate = DSelectKGate(6, 3, 8, k=2)
    with torch.no_grad():
        gate.codes_proj.weight.mul_(1000.0)  # every bit far outside the ramp: exactly 0 or 1
    w = gate(torch.randn(64, 6))
    assert ((w > 0).sum(-1) <= 2).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 64))


def test_softmax_gate_is_a_softmax_of_one_linear_map():
    torch.manual_seed(0)
    gate = SoftmaxGate(5, num_gates=2, num_experts=3).double()
    x = torch.randn(4, 5, dtype=torch.float64)
    logits = x @ gate.proj.weight.T + gate.proj.bias
    expected = torch.softmax(logits.view(4, 2, 3), -1).transpose(0, 1)
    torch.testing.assert_close(gate(x), expected)
