"""PCGrad's projection on hand-worked cases, and its hand-off into ``.grad``."""

import torch

from recmtl.train.pcgrad import PCGrad, project_conflicting


def test_conflicting_gradients_are_projected_hand_worked():
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    # g1 - (g1.g2 / |g2|^2) g2 = [1, 0] + 0.5 [-1, 1];  g2 - (g2.g1 / |g1|^2) g1 = [0, 1]
    torch.testing.assert_close(project_conflicting([g1, g2]), torch.tensor([0.5, 1.5]))


def test_agreeing_gradients_are_summed_unchanged():
    g1, g2 = torch.tensor([1.0, 2.0]), torch.tensor([0.5, 0.1])
    torch.testing.assert_close(project_conflicting([g1, g2]), g1 + g2)


def test_projected_gradient_no_longer_conflicts_with_either_task():
    torch.manual_seed(0)
    for _ in range(20):
        g1, g2 = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
        merged = project_conflicting([g1, g2])
        assert merged.dot(g1) >= -1e-12 and merged.dot(g2) >= -1e-12


def test_pcgrad_writes_the_projection_into_grad():
    w = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
    other = torch.nn.Parameter(torch.tensor([2.0]))
    terms = [w[0] - 0.0 * w[1] + other[0], -w[0] + w[1]]  # gradients [1, 0] and [-1, 1] on w
    pc = PCGrad([w])
    pc.prepare(terms)
    assert w.grad is None  # prepare does not touch .grad
    sum(terms).backward()
    pc.apply()
    torch.testing.assert_close(w.grad, torch.tensor([0.5, 1.5]))
    torch.testing.assert_close(other.grad, torch.tensor([1.0]))  # not shared: plain gradient
