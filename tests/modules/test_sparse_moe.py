"""TaskSparseMoE against float64 re-computations: routing, dispatch, capacity, balance, export."""

import itertools
import math

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from recmtl.modules.gates import SoftmaxGate
from recmtl.modules.mlp import BatchedExperts
from recmtl.modules.mmoe import MMoE
from recmtl.modules.sparse_moe import TaskSparseMoE

IN, HIDDEN, OUT = 6, 5, 3


def _moe(num_experts=5, num_tasks=3, k=2, seed=0, **kwargs) -> TaskSparseMoE:
    torch.manual_seed(seed)
    experts = BatchedExperts(IN, [HIDDEN, OUT], num_experts)
    return TaskSparseMoE(experts=experts, in_features=IN, num_tasks=num_tasks, k=k,
                         **kwargs).double()


def _logits_reference(moe: TaskSparseMoE, x: np.ndarray) -> np.ndarray:
    """``[T, B, E]`` logits: per-task routers, or one router over ``concat(x, e_t)``."""
    t, e = moe.num_tasks, moe.num_experts
    w = moe.router.weight.detach().numpy()
    bias = moe.router.bias.detach().numpy()
    if not moe.shared_router:
        return (x @ w.T + bias).reshape(len(x), t, e).transpose(1, 0, 2)
    w_full = np.concatenate([w, moe.task_router.weight.detach().numpy()], axis=1)
    emb = moe.task_embedding.detach().numpy()
    return np.stack([np.concatenate([x, np.repeat(emb[i][None], len(x), 0)], 1) @ w_full.T + bias
                     for i in range(t)])


def _softmax(z: np.ndarray) -> np.ndarray:
    z = np.exp(z - z.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def _gates_reference(logits: np.ndarray, k: int, routing: str = "sample") -> np.ndarray:
    """Per (task, sample): a softmax over the task's logits at the k chosen experts, zeros
    elsewhere. Chosen: the sample's k largest mean task probabilities (sample routing), or the
    task's own k largest logits (task routing)."""
    gates = np.zeros_like(logits)
    score = _softmax(logits).mean(0)  # [B, E]
    for t, b in itertools.product(range(logits.shape[0]), range(logits.shape[1])):
        top = np.argsort(-(score[b] if routing == "sample" else logits[t, b]))[:k]
        gates[t, b, top] = _softmax(logits[t, b, top])
    return gates


def _experts_reference(moe: TaskSparseMoE, x: np.ndarray) -> np.ndarray:
    """``[E, B, D]``: every expert's ReLU MLP on every sample."""
    outs = []
    for e in range(moe.num_experts):
        h = x
        for w, b in zip(moe.experts.weights, moe.experts.biases, strict=True):
            h = np.maximum(h @ w[e].detach().numpy() + b[e, 0].detach().numpy(), 0.0)
        outs.append(h)
    return np.stack(outs)


@pytest.mark.parametrize("routing", ["sample", "task"])
@pytest.mark.parametrize("shared_router", [False, True])
def test_top_k_weights_match_a_per_sample_loop(shared_router, routing):
    moe = _moe(shared_router=shared_router, task_embedding_dim=4, routing=routing)
    x = torch.randn(9, IN, dtype=torch.float64)
    gates, kept, _ = moe.route(x)
    expected = _gates_reference(_logits_reference(moe, x.numpy()), k=2, routing=routing)
    np.testing.assert_allclose(gates.detach().numpy(), expected, atol=1e-12)
    np.testing.assert_array_equal(kept.numpy(), expected > 0)
    assert (kept.sum(-1) == 2).all()
    # Sample routing: every task uses the same k experts; task routing: not on a random router.
    same = bool((kept == kept[:1]).all())
    assert same == (routing == "sample")


@pytest.mark.parametrize("routing", ["sample", "task"])
@pytest.mark.parametrize("deduplicate, sparse_dispatch",
                         [(True, True), (False, True), (True, False)])
def test_output_matches_dense_experts_times_top_k_mask(deduplicate, sparse_dispatch, routing):
    moe = _moe(deduplicate=deduplicate, sparse_dispatch=sparse_dispatch, routing=routing)
    x = torch.randn(11, IN, dtype=torch.float64)
    gates = _gates_reference(_logits_reference(moe, x.numpy()), k=2, routing=routing)
    expected = np.einsum("tbe,ebd->tbd", gates, _experts_reference(moe, x.numpy()))
    np.testing.assert_allclose(moe(x).detach().numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("routing", ["sample", "task"])
@pytest.mark.parametrize("shared_router", [False, True])
def test_k_equal_to_e_without_capacity_is_an_mmoe(shared_router, routing):
    moe = _moe(num_experts=4, k=4, shared_router=shared_router, routing=routing)
    gate = SoftmaxGate(IN, num_gates=3, num_experts=4).double()
    with torch.no_grad():
        if shared_router:  # logits_t = W_x x + (W_e e_t + b): the same W_x for every task
            gate.proj.weight.copy_(moe.router.weight.repeat(3, 1))
            gate.proj.bias.copy_((moe.router.bias + moe.task_router(moe.task_embedding)).reshape(-1))
        else:
            gate.proj.load_state_dict(moe.router.state_dict())
    mmoe = MMoE(moe.experts, gate)
    x = torch.randn(8, IN, dtype=torch.float64)
    torch.testing.assert_close(moe(x), mmoe(x))
    assert moe.output_dim == mmoe.output_dim == OUT and moe.num_tasks == mmoe.num_tasks == 3


def _hand_routed(num_tasks, k, capacity_factor, num_experts=2, **kwargs) -> TaskSparseMoE:
    """Router logits equal to the first ``num_experts`` input columns for every task."""
    moe = _moe(num_experts=num_experts, num_tasks=num_tasks, k=k,
               capacity_factor=capacity_factor, **kwargs)
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.bias.zero_()
        for t in range(num_tasks):
            moe.router.weight[t * num_experts:(t + 1) * num_experts, :num_experts] = torch.eye(
                num_experts)
    return moe


@pytest.mark.parametrize("deduplicate, sparse_dispatch",
                         [(True, True), (False, True), (True, False)])
def test_capacity_drops_second_choices_before_first_choices(deduplicate, sparse_dispatch):
    # E = 2, k = 2, T = 1, B = 2, c = 0.5: capacity ceil(0.5 * 2 * 1 * 2 / 2) = 1 per expert.
    # Sample 0 prefers expert 0, sample 1 expert 1. First choices fill both experts, so both
    # second choices are dropped; the kept first-choice weights are not renormalised.
    moe = _hand_routed(num_tasks=1, k=2, capacity_factor=0.5, deduplicate=deduplicate,
                       sparse_dispatch=sparse_dispatch)
    x = torch.zeros(2, IN, dtype=torch.float64)
    x[0, :2] = torch.tensor([2.0, 1.0])
    x[1, :2] = torch.tensor([0.0, 3.0])
    f = _experts_reference(moe, x.numpy())
    w0 = math.exp(2) / (math.exp(2) + math.exp(1))
    w1 = math.exp(3) / (math.exp(3) + 1.0)
    expected = np.stack([w0 * f[0, 0], w1 * f[1, 1]])[None]
    np.testing.assert_allclose(moe(x).detach().numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(moe.last_drop_fraction.numpy(), [0.5])
    if sparse_dispatch:
        assert moe.last_expert_rows.tolist() == [1, 1]


def test_capacity_is_rounded_up_and_fills_in_task_then_sample_order():
    # E = 2, k = 1, T = 2, B = 3, c = 0.75: capacity ceil(0.75 * 1 * 2 * 3 / 2) = ceil(2.25) = 3.
    # Every assignment wants expert 0: task 0 takes samples 0..2, task 1 gets nothing.
    moe = _hand_routed(num_tasks=2, k=1, capacity_factor=0.75, routing="task")
    x = torch.randn(3, IN, dtype=torch.float64)
    x[:, 0], x[:, 1] = 5.0, -5.0
    out = moe(x).detach().numpy()
    np.testing.assert_allclose(out[0], _experts_reference(moe, x.numpy())[0], atol=1e-12)
    np.testing.assert_array_equal(out[1], 0.0)
    np.testing.assert_allclose(moe.last_drop_fraction.numpy(), [0.0, 1.0])
    assert moe.last_expert_rows.tolist() == [3, 0]
    np.testing.assert_allclose(moe.last_utilisation.numpy(), [[1.0, 0.0], [1.0, 0.0]])


def test_unlimited_capacity_drops_nothing_and_generous_capacity_matches_it():
    x = torch.randn(16, IN, dtype=torch.float64)
    free, roomy = _moe(), _moe(capacity_factor=5.0 / 2)  # ceil(2.5 * k T B / E) >= k T B / 1
    torch.testing.assert_close(free(x), roomy(x))
    assert roomy.last_drop_fraction.sum() == 0


def test_capacity_in_sample_routing_counts_samples_not_tasks():
    # E = 2, k = 1, T = 2, B = 3, c = 1: capacity ceil(1 * 1 * 3 / 2) = 2 per expert (task
    # routing would allow 3). All samples choose expert 0: samples 0 and 1 keep it for both
    # tasks, sample 2 is dropped for both.
    moe = _hand_routed(num_tasks=2, k=1, capacity_factor=1.0, routing="sample")
    x = torch.randn(3, IN, dtype=torch.float64)
    x[:, 0], x[:, 1] = 5.0, -5.0
    out = moe(x).detach().numpy()
    f = _experts_reference(moe, x.numpy())[0]
    for t in range(2):
        np.testing.assert_allclose(out[t, :2], f[:2], atol=1e-12)
        np.testing.assert_array_equal(out[t, 2], 0.0)
    np.testing.assert_allclose(moe.last_drop_fraction.numpy(), [1 / 3, 1 / 3])
    assert moe.last_expert_rows.tolist() == [2, 0]


@pytest.mark.parametrize("routing", ["sample", "task"])
def test_balance_loss_and_utilisation_match_a_hand_computation(routing):
    moe = _moe(num_experts=4, num_tasks=2, k=2, routing=routing)
    x = torch.randn(10, IN, dtype=torch.float64)
    moe(x)
    logits = _logits_reference(moe, x.numpy())
    gates = _gates_reference(logits, k=2, routing=routing)
    selected = gates > 0
    if routing == "sample":  # one choice per sample, scored by the mean task probability
        f = selected[0].sum(0) / (2 * 10)
        expected = 4 * (f * _softmax(logits).mean(0).mean(0)).sum()
        utilisation = np.stack([f, f])  # the tasks share the choice
    else:  # per task, averaged
        per_task, utilisation = [], np.zeros((2, 4))
        for t in range(2):
            f = selected[t].sum(0) / (2 * 10)
            utilisation[t] = f
            per_task.append(4 * sum(f[e] * _softmax(logits[t])[:, e].mean() for e in range(4)))
        expected = np.mean(per_task)
    assert moe.aux_loss is not None
    np.testing.assert_allclose(moe.aux_loss.item(), expected, rtol=1e-12)
    np.testing.assert_allclose(moe.last_utilisation.numpy(), utilisation, atol=1e-12)
    np.testing.assert_allclose(moe.last_utilisation.numpy().sum(1), 1.0, rtol=1e-12)
    moe.aux_loss.backward()
    assert moe.router.weight.grad.abs().sum() > 0


def test_balance_loss_on_hand_worked_balanced_and_collapsed_routing():
    # E = 2, k = 1, logits = the first two input columns. Balanced: the samples mirror each
    # other, f = P = (1/2, 1/2), loss 2 * (1/4 + 1/4) = 1. Collapsed: both pick expert 0 with
    # probability p, f = (1, 0), loss 2 * p.
    moe = _hand_routed(num_tasks=1, k=1, capacity_factor=None)
    x = torch.zeros(2, IN, dtype=torch.float64)
    x[0, :2] = torch.tensor([1.0, 0.0])
    x[1, :2] = torch.tensor([0.0, 1.0])
    moe(x)
    np.testing.assert_allclose(moe.aux_loss.item(), 1.0, rtol=1e-12)
    x[1, :2] = torch.tensor([1.0, 0.0])
    moe(x)
    p = math.exp(1) / (math.exp(1) + 1)
    np.testing.assert_allclose(moe.aux_loss.item(), 2 * p, rtol=1e-12)
    np.testing.assert_allclose(moe.last_utilisation.numpy(), [[1.0, 0.0]])


def _flops(moe: TaskSparseMoE, x: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        moe(x)
    return counter.get_total_flops()


@pytest.mark.parametrize("routing", ["sample", "task"])
@pytest.mark.parametrize("deduplicate", [False, True])
def test_compute_is_sparse(deduplicate, routing):
    t, e, k, b = 3, 8, 2, 64
    moe = _moe(num_experts=e, num_tasks=t, k=k, deduplicate=deduplicate, routing=routing)
    x = torch.randn(b, IN, dtype=torch.float64)
    router = 2 * b * IN * t * e
    per_row = 2 * (IN * HIDDEN + HIDDEN * OUT)
    selected = _gates_reference(_logits_reference(moe, x.numpy()), k, routing) > 0  # [T, B, E]
    rows = selected.any(0).sum() if deduplicate else k * t * b
    if deduplicate and routing == "sample":
        assert rows == k * b  # exactly k experts per sample, whatever T
    elif deduplicate:
        assert k * b < rows < k * t * b  # tasks share some choices on a random router
    assert _flops(moe, x) == router + per_row * rows
    assert moe.last_expert_rows.sum().item() == rows
    moe.sparse_dispatch = False
    assert _flops(moe, x) > router + per_row * e * b  # every expert on every sample


def test_gradients_match_dense_evaluation_and_reach_the_router():
    x = torch.randn(12, IN, dtype=torch.float64, requires_grad=True)
    grads = []
    for sparse in (True, False):
        moe = _moe(capacity_factor=1.0, shared_router=True, sparse_dispatch=sparse)
        x.grad = None
        (moe(x) * torch.linspace(-1, 1, OUT, dtype=torch.float64)).sum().backward()
        grads.append({n: p.grad.clone() for n, p in moe.named_parameters()} | {"x": x.grad.clone()})
    assert grads[0]["router.weight"].abs().sum() > 0
    assert grads[0]["task_embedding"].abs().sum() > 0
    for name, g in grads[0].items():
        torch.testing.assert_close(g, grads[1][name], msg=name)


def test_bfloat16_autocast_runs_and_agrees_with_dense_evaluation():
    moe = _moe(num_experts=6, k=2, capacity_factor=1.0).float()
    x = torch.randn(32, IN)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        sparse = moe(x)
        moe.sparse_dispatch = False
        dense = moe(x)
    torch.testing.assert_close(sparse.float(), dense.float(), atol=2e-2, rtol=2e-2)
    sparse.float().sum().backward()
    assert moe.router.weight.grad.abs().sum() > 0


def test_constructor_rejects_bad_arguments():
    experts = BatchedExperts(IN, [OUT], 4)
    with pytest.raises(ValueError, match="routing"):
        TaskSparseMoE(experts=experts, in_features=IN, num_tasks=2, k=2, routing="token")
    with pytest.raises(ValueError, match="k must be"):
        TaskSparseMoE(experts=experts, in_features=IN, num_tasks=2, k=5)
    with pytest.raises(ValueError, match="in_features"):
        TaskSparseMoE(experts=experts, in_features=IN + 1, num_tasks=2, k=2)
    with pytest.raises(ValueError, match="normalize"):
        TaskSparseMoE(experts=BatchedExperts(IN, [OUT], 4, normalize=True), in_features=IN,
                      num_tasks=2, k=2)


@pytest.mark.parametrize("routing", ["sample", "task"])
def test_export_with_a_dynamic_batch_matches_sparse_eager(routing):
    # c = 0.5: the experts take half of the k B (sample) or k T B (task) assignments at most,
    # so some are dropped in every batch.
    moe = _moe(num_experts=6, k=2, capacity_factor=0.5, routing=routing).float().eval()
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    program = torch.export.export(moe, (torch.randn(5, IN),), dynamic_shapes=({0: batch},))
    exported = program.module()
    for b in (7, 40):  # capacity follows the batch size in the exported graph
        x = torch.randn(b, IN)
        expected = moe(x)
        assert moe.last_drop_fraction.sum() > 0
        torch.testing.assert_close(exported(x), expected)
