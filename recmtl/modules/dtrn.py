"""DTRN (Liu et al., CIKM 2023): a task-specific bottom representation for each task.

Two parts turn the shared bottom (pooled embeddings, dense floats) into one input per task:

- ``TaskInterest``: each task extracts its own interest from a behaviour sequence with a DIN
  attention unit whose weights a hypernetwork generates from a learned task embedding.
  ``[B, D]`` candidate, ``[B, L, D]`` history -> ``[B, T * D]`` (task t's interest in
  columns ``t * D .. (t + 1) * D``).
- ``TaskSENet``: per task, a SENet-like block (squeeze every field to its mean, excite with
  two layers) re-weights every field's embedding.

``DTRN`` is the backbone the builder makes: it splits its flat ``[B, in]`` input into fields,
gives each task its own copy (its own columns of the task-stacked sequence blocks),
re-weights it by that task's SENet and runs any backbone on every task's input, keeping task
t's output from task t's input.

Readings where the paper leaves details open (each is said in its class too):

- Hypernetwork: parameter-efficient by low rank, ``W_t = W + U diag(g(e_t)) V`` per layer of
  the attention unit, with ``W`` shared, ``U [in, r]``, ``V [r, out]`` and the generator ``g``
  (one linear map of the task embedding ``e_t``) per layer; biases are shared. Each sequence
  feature owns its hypernetwork (the paper shares one across behaviour types, fed a type
  embedding too).
- SENet gate: ``2 * sigmoid`` (weights start near 1, bounded by 2) or FiBiNET's ``relu``
  (``gate`` flag). The squeeze of a field is the mean of its columns; a dense float is a
  field of its own.
- Pair products (``model.interaction: dot``): per task, after its SENet, the dot products of
  every pair of its re-weighted blocks (its own interest part in place of a task-stacked
  block) join its input, so each task's interactions see its own field weights and its own
  interest; DLRM's shared dot products could not read a per-task interest.
- Backbone on task-specific inputs: the backbone runs once on the T inputs stacked
  (``[T * B, W]``) and task t keeps its own output row from its own input; with MMoE this is
  the paper's shared experts and per-task gates reading each task's own bottom. It costs T
  backbone passes.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from recmtl.modules.interaction import DotInteraction
from recmtl.modules.sequence import length_mask, masked_softmax


class TaskHyperLinear(nn.Module):
    """A linear layer whose weights a hypernetwork draws per task from its embedding.

    ``x [T, ..., in], tasks [T, E] -> [T, ..., out]`` with task t's weight
    ``W + U diag(g(e_t)) V`` (``g``: a linear map ``E -> rank``) and the shared bias.

    Args:
        in_features: input width.
        out_features: output width.
        task_dim: E, the width of a task embedding.
        rank: r, the rank of the generated part of the weight.
    """

    def __init__(self, *, in_features: int, out_features: int, task_dim: int, rank: int,
                 shared_init: bool = False) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))
        # Scaled so that the generated part starts about as large as the shared weight: tasks
        # differ from the first step, unless ``shared_init`` zeroes the generator (every task
        # starts at W; U and V still get gradient through it, as LoRA's zero B).
        self.left = nn.Parameter(torch.randn(in_features, rank) * bound)
        self.right = nn.Parameter(torch.randn(rank, out_features) / math.sqrt(rank))
        self.generator = nn.Linear(task_dim, rank)
        if shared_init:
            nn.init.zeros_(self.generator.weight)
            nn.init.zeros_(self.generator.bias)
        self.output_dim = out_features

    def task_weights(self, tasks: torch.Tensor) -> torch.Tensor:
        """``tasks [T, E] -> [T, in, out]``, each task's generated weight."""
        core = self.generator(tasks)  # [T, r]
        return self.weight + torch.einsum("ir,tr,ro->tio", self.left, core, self.right)

    def forward(self, x: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        weight = self.task_weights(tasks)
        flat = x.reshape(x.shape[0], -1, x.shape[-1])
        out = torch.bmm(flat, weight) + self.bias
        return out.reshape(*x.shape[:-1], weight.shape[-1])


class TaskInterest(nn.Module):
    """DTRN's task-specific interest module: ``query [B, D], keys [B, L, D], lengths [B] ->
    [B, T * D]``, task t's interest in columns ``t * D .. (t + 1) * D``.

    Task t scores slot i with DIN's attention unit (``recmtl.modules.sequence.TargetAttention``:
    ReLU layers of ``hidden_dims`` over ``[q, k_i, q - k_i, q * k_i]``, then a linear score)
    whose every layer is a ``TaskHyperLinear`` fed t's learned embedding, and pools
    ``sum_i w_ti k_i`` with ``w_t`` the masked softmax of its scores (``normalize``) or the raw
    scores. With T = 1 it is a ``TargetAttention`` whose weights are the generated ones.
    Padding slots and empty rows behave as in ``TargetAttention`` (exact zeros).

    Args:
        embedding_dim: D.
        hidden_dims: the attention unit's hidden widths.
        num_tasks: T.
        task_dim: width of each task's embedding (the hypernetwork's input).
        rank: rank of each generated weight's task-specific part.
        normalize: softmax over the valid slots (True) or DIN's raw weights.
        shared_init: every task starts at the shared weights (see ``TaskHyperLinear``).

    Example:
        >>> unit = TaskInterest(embedding_dim=4, hidden_dims=[8], num_tasks=3, task_dim=2, rank=2)
        >>> unit(torch.randn(5, 4), torch.randn(5, 6, 4), torch.tensor([6, 0, 2, 1, 3])).shape
        torch.Size([5, 12])
    """

    def __init__(self, *, embedding_dim: int, hidden_dims: list[int] | tuple[int, ...],
                 num_tasks: int, task_dim: int, rank: int, normalize: bool = True,
                 shared_init: bool = False) -> None:
        super().__init__()
        self.task_embeddings = nn.Parameter(torch.randn(num_tasks, task_dim))
        widths = [4 * embedding_dim, *hidden_dims, 1]
        self.layers = nn.ModuleList(
            TaskHyperLinear(in_features=i, out_features=o, task_dim=task_dim, rank=rank,
                            shared_init=shared_init)
            for i, o in zip(widths[:-1], widths[1:], strict=True))
        self.normalize = normalize
        self.num_tasks = num_tasks
        self.output_dim = num_tasks * embedding_dim

    def generated_weights(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, ``(weight [T, in, out], bias [out])`` as the tasks use them."""
        out: list[tuple[torch.Tensor, torch.Tensor]] = []
        for layer in self.layers:
            assert isinstance(layer, TaskHyperLinear)
            out.append((layer.task_weights(self.task_embeddings), layer.bias))
        return out

    def forward(self, query: torch.Tensor, keys: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        b, length, d = keys.shape
        mask = length_mask(lengths, length)  # [B, L]
        keys = keys.masked_fill(~mask.unsqueeze(-1), 0.0)
        q = query.unsqueeze(1).expand_as(keys)
        unit_in = torch.cat([q, keys, q - keys, q * keys], dim=-1)  # [B, L, 4D]
        h = unit_in.unsqueeze(0).expand(self.num_tasks, b, length, 4 * d)
        for i, layer in enumerate(self.layers):
            h = layer(h, self.task_embeddings)
            if i < len(self.layers) - 1:
                h = torch.relu(h)
        scores = h.squeeze(-1)  # [T, B, L]
        if self.normalize:
            weights = masked_softmax(scores, mask.unsqueeze(0))
        else:
            weights = scores.masked_fill(~mask.unsqueeze(0), 0.0)
        interests = torch.einsum("tbl,bld->btd", weights, keys)
        return interests.reshape(b, self.output_dim)


class TaskSENet(nn.Module):
    """Per-task SENet-like field weights: ``z [T, B, F]`` (each field squeezed to its mean) ->
    ``[T, B, F]``, task t's weight of every field.

    Task t computes ``gate(W2_t relu(W1_t z_t + b1_t) + b2_t)`` with its own weights (hidden
    width ``ceil(F / reduction)``). ``gate="sigmoid"`` is ``2 * sigmoid`` (starts near 1,
    bounded by 2); ``"relu"`` is FiBiNET's choice (unbounded, a field may be switched off).

    Args:
        num_fields: F.
        num_tasks: T.
        reduction: F over the hidden width.
        gate: ``"sigmoid"`` or ``"relu"``.

    Example:
        >>> TaskSENet(num_fields=5, num_tasks=2, reduction=2)(torch.randn(2, 3, 5)).shape
        torch.Size([2, 3, 5])
    """

    def __init__(self, *, num_fields: int, num_tasks: int, reduction: float = 2.0,
                 gate: str = "sigmoid") -> None:
        super().__init__()
        if gate not in ("sigmoid", "relu"):
            raise ValueError(f"gate must be 'sigmoid' or 'relu', got {gate!r}")
        hidden = max(1, math.ceil(num_fields / reduction))
        b1, b2 = 1.0 / math.sqrt(num_fields), 1.0 / math.sqrt(hidden)
        self.w1 = nn.Parameter(torch.empty(num_tasks, num_fields, hidden).uniform_(-b1, b1))
        self.b1 = nn.Parameter(torch.empty(num_tasks, 1, hidden).uniform_(-b1, b1))
        self.w2 = nn.Parameter(torch.empty(num_tasks, hidden, num_fields).uniform_(-b2, b2))
        self.b2 = nn.Parameter(torch.empty(num_tasks, 1, num_fields).uniform_(-b2, b2))
        self.gate = gate
        self.num_fields = num_fields

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = torch.relu(torch.bmm(z, self.w1) + self.b1)
        s = torch.bmm(h, self.w2) + self.b2
        return 2 * torch.sigmoid(s) if self.gate == "sigmoid" else torch.relu(s)


def task_width(block_widths: list[int], task_blocks: list[int] | set[int], num_scalars: int,
               num_tasks: int, pairs: bool = False) -> int:
    """The width of one task's bottom in ``DTRN``: its part of every block (a task-stacked
    block's T-th), the scalars and, with ``pairs``, one dot product per pair of blocks.

    Example:
        >>> task_width([4, 6, 3], [1], num_scalars=2, num_tasks=2, pairs=True)
        15
    """
    n = len(block_widths)
    return (sum(w // num_tasks if i in task_blocks else w for i, w in enumerate(block_widths))
            + num_scalars + (n * (n - 1) // 2 if pairs else 0))


class DTRN(nn.Module):
    """``[B, in] -> [T, B, H]``: task-specific bottoms, re-weighted per task, through a backbone.

    The input is the usual flat backbone input: column blocks (one per pooled sparse feature,
    the interaction's pair products) then single columns (the dense floats). A block listed in
    ``task_blocks`` holds T task-specific parts side by side (a ``TaskInterest`` output, width
    ``T * D``): task t reads part t; every other block and column is shared. Each block and
    each column is a field; task t's input is its fields times its ``TaskSENet`` weights,
    concatenated, with ``pairs`` followed by the dot products of every pair of its re-weighted
    blocks (width ``task_width``), and task t's output is row t of ``backbone(task t's input)``.

    Args:
        block_widths: widths of the leading column blocks.
        task_blocks: indices (into ``block_widths``) of the task-stacked blocks.
        num_scalars: the trailing single columns.
        num_tasks: T.
        senet: a ``TaskSENet`` over ``len(block_widths) + num_scalars`` fields.
        backbone: ``[N, task_width] -> [T, N, H]`` (MMoE, PLE, ...).
        pairs: append each task's pair products (its blocks must then share one width).

    Example:
        >>> from recmtl.modules.mlp import MLP
        >>> from recmtl.modules.shared_bottom import SharedBottom
        >>> se = TaskSENet(num_fields=4, num_tasks=2)
        >>> net = DTRN(block_widths=[4, 8], task_blocks=[1], num_scalars=2, num_tasks=2,
        ...            senet=se, backbone=SharedBottom(MLP(10, [6]), num_tasks=2))
        >>> net(torch.randn(3, 14)).shape
        torch.Size([2, 3, 6])
    """

    def __init__(self, *, block_widths: list[int], task_blocks: list[int], num_scalars: int,
                 num_tasks: int, senet: TaskSENet, backbone: nn.Module,
                 pairs: bool = False) -> None:
        super().__init__()
        if any(block_widths[i] % num_tasks for i in task_blocks):
            raise ValueError(f"task blocks {task_blocks} of {block_widths} must split into "
                             f"{num_tasks} parts")
        if senet.num_fields != len(block_widths) + num_scalars:
            raise ValueError(f"the SENet weighs {senet.num_fields} fields, the input has "
                             f"{len(block_widths) + num_scalars}")
        self.block_widths = list(block_widths)
        self.task_blocks = set(task_blocks)
        parts = {w // num_tasks if i in self.task_blocks else w for i, w in enumerate(block_widths)}
        if pairs and len(parts) > 1:
            raise ValueError(f"pair products need blocks of one width per task, got {sorted(parts)}")
        # Each task's blocks, [T * B, F * D], through the ranker's own dot interaction.
        self.pairs = (DotInteraction(len(block_widths), parts.pop())
                      if pairs and len(block_widths) > 1 else None)
        self.num_scalars = num_scalars
        self.num_tasks = num_tasks
        self.senet = senet
        self.backbone = backbone
        self.in_features = sum(block_widths) + num_scalars
        self.task_width = task_width(block_widths, self.task_blocks, num_scalars, num_tasks,
                                     self.pairs is not None)
        self.output_dim = backbone.output_dim

    def task_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in] -> [T, B, task_width]``: each task's re-weighted bottom."""
        t, b = self.num_tasks, x.shape[0]
        width = sum(self.block_widths)
        fields = []
        for i, part in enumerate(x[:, :width].split(self.block_widths, dim=1)):
            if i in self.task_blocks:
                fields.append(part.reshape(b, t, -1).transpose(0, 1))
            else:
                fields.append(part.unsqueeze(0).expand(t, b, part.shape[1]))
        scalars = x[:, width:].unsqueeze(0).expand(t, b, self.num_scalars)
        squeezed = torch.cat([f.mean(dim=-1, keepdim=True) for f in fields] + [scalars], dim=-1)
        weights = self.senet(squeezed)  # [T, B, F]
        reweighted = [f * weights[..., i:i + 1] for i, f in enumerate(fields)]
        reweighted.append(scalars * weights[..., len(fields):])
        if self.pairs is not None:
            blocks = torch.cat(reweighted[:-1], dim=-1).reshape(t * b, -1)
            reweighted.append(self.pairs.products(blocks).view(t, b, -1))
        return torch.cat(reweighted, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, b = self.num_tasks, x.shape[0]
        stacked = self.task_inputs(x).reshape(t * b, self.task_width)
        out = self.backbone(stacked)  # [T, T * B, H]: every task's row on every task's input
        return torch.diagonal(out.reshape(t, t, b, -1), dim1=0, dim2=1).permute(2, 0, 1)
