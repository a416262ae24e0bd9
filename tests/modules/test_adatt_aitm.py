"""AdaTT and AITM against their formulas, re-computed from the submodules in float64."""

import pytest
import torch

from recmtl.config import ModelConfig
from recmtl.models.architecture import BackboneInputs
from recmtl.models.registry import ARCHITECTURES
from recmtl.modules.aitm import AITMTransfer


def _adatt(**kw):
    cfg = ModelConfig(arch="adatt", num_experts=2, task_experts=2, num_levels=2,
                      expert_layers=(4,), **kw)
    torch.manual_seed(0)
    return ARCHITECTURES["adatt"].build(cfg, BackboneInputs.flat(6), ["a", "b", "c"]).double()


def _mix(gate, inp, experts):
    return torch.einsum("be,ebd->bd", torch.softmax(gate.proj(inp), -1), experts)


def test_adatt_matches_its_formula_with_the_native_residual():
    adatt = _adatt()
    x = torch.randn(5, 6, dtype=torch.float64)
    tasks, shared = [x] * 3, x
    for level in adatt.levels:
        own = [e(h) for e, h in zip(level.task_experts, tasks, strict=True)]
        everything = torch.cat([*own, level.shared_experts(shared)])
        new = [_mix(level.gates[t], tasks[t], everything)
               + (level.residual[t][:, None, None] * own[t]).sum(0) for t in range(3)]
        shared = _mix(level.shared_gate, shared, everything) if level.shared_gate else None
        tasks = new
    torch.testing.assert_close(adatt(x), torch.stack(tasks))


def test_adatt_task_gate_sees_other_tasks_experts():
    adatt = _adatt(adatt_residual=False).eval()
    x = torch.randn(5, 6, dtype=torch.float64)
    before = adatt(x).detach()
    with torch.no_grad():
        for p in adatt.levels[1].task_experts[2].parameters():
            p.add_(0.5)
    after = adatt(x).detach()
    assert all(not torch.equal(after[t], before[t]) for t in range(3))


@pytest.mark.parametrize("residual", [True, False])
def test_every_adatt_parameter_gets_gradient(residual):
    adatt = _adatt(adatt_residual=residual).float()
    adatt(torch.randn(16, 6)).square().sum().backward()
    for name, p in adatt.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_aitm_transfer_matches_its_formula():
    torch.manual_seed(0)
    aitm = AITMTransfer(dim=4, num_tasks=3).double()
    q = [torch.randn(7, 4, dtype=torch.float64) for _ in range(3)]
    out = aitm(q)
    assert torch.equal(out[0], q[0])
    z = q[0]
    for i in range(2):
        p = torch.relu(aitm.transfer[i][0](z))
        expected = []
        for b in range(7):
            cands = [p[b], q[i + 1][b]]
            scores = torch.stack([(aitm.query[i](u) * aitm.key[i](u)).sum() / 2.0 for u in cands])
            w = torch.softmax(scores, 0)
            expected.append(w[0] * aitm.value[i](cands[0]) + w[1] * aitm.value[i](cands[1]))
        z = torch.stack(expected)
        torch.testing.assert_close(out[i + 1], z)
