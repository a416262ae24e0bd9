"""Expert-health probes: the failure modes HoME names, measured on real batches.

``ExpertProbe`` hooks every gate and expert block of a backbone while it is active and sums,
over the rows it sees:

- per expert block and expert: the share of non-positive outputs (for ReLU experts, the dead
  activations; HoME saw experts with >90%),
- per gate (one row per gate, e.g. per task): the mean weight on each expert (collapse: all
  mass on one expert; degradation: a shared expert used by one task only) and the mean
  entropy of the weights (0 = one expert, ``log E`` = uniform).

A ``TaskSparseMoE``'s router counts as a gate named ``<module>.router`` (one row per task) whose
weights are its top-k gates (zero off the top-k and where dropped), plus per task the
utilisation (the share of its top-k selections each expert got) and the share of its
assignments dropped over capacity.

Example:
    >>> from recmtl.modules.mmoe import MMoE
    >>> backbone = MMoE(BatchedExperts(in_features=8, layer_sizes=[4], num_experts=3),
    ...                 SoftmaxGate(in_features=8, num_gates=2, num_experts=3))
    >>> probe = ExpertProbe(backbone)
    >>> with probe:
    ...     _ = backbone(torch.randn(16, 8))
    >>> mass = probe.summary()["gates"]["gate"]["mass"]  # [G][E]: each row sums to 1
    >>> len(mass), len(mass[0]), round(sum(mass[0]), 6)
    (2, 3, 1.0)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from recmtl.modules.gates import DSelectKGate, SoftmaxGate
from recmtl.modules.mlp import BatchedExperts
from recmtl.modules.sparse_moe import TaskSparseMoE


class ExpertProbe:
    """Sums gate and expert statistics over every forward while entered (``with probe:``)."""

    def __init__(self, backbone: nn.Module) -> None:
        self.gates = {n: m for n, m in backbone.named_modules()
                      if isinstance(m, SoftmaxGate | DSelectKGate)}
        self.experts = {n: m for n, m in backbone.named_modules() if isinstance(m, BatchedExperts)}
        self.routers = {f"{n}.router" if n else "router": m for n, m in backbone.named_modules()
                        if isinstance(m, TaskSparseMoE)}
        self.sums: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> ExpertProbe:
        for name, gate in self.gates.items():
            self._handles.append(gate.register_forward_hook(self._gate_hook(name)))
        for name, experts in self.experts.items():
            self._handles.append(experts.register_forward_hook(self._expert_hook(name)))
        for name, moe in self.routers.items():
            self._handles.append(moe.register_forward_hook(self._router_hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _add(self, key: str, value: torch.Tensor) -> None:
        value = value.detach().double()
        self.sums[key] = self.sums[key] + value if key in self.sums else value

    def _gate_hook(self, name: str) -> Any:
        def hook(module: nn.Module, inputs: Any, weights: torch.Tensor) -> None:  # [G, B, E]
            self._add_gate(name, weights)
        return hook

    def _add_gate(self, name: str, weights: torch.Tensor) -> None:
        w = weights.detach().float()
        entropy = -(w * torch.log(w.clamp(min=1e-12))).sum(-1)  # [G, B]
        self._add(f"gate:{name}:mass", w.sum(1))
        self._add(f"gate:{name}:entropy", entropy.sum(1))
        self._add(f"gate:{name}:rows", torch.tensor(float(w.shape[1])))

    def _router_hook(self, name: str) -> Any:
        def hook(module: TaskSparseMoE, inputs: Any, out: torch.Tensor) -> None:
            with torch.no_grad():  # the forward keeps no gates; routing again is cheap
                gates, _, _ = module.route(inputs[0])  # [T, B, E]
            assert module.last_utilisation is not None and module.last_drop_fraction is not None
            self._add_gate(name, gates)
            rows = gates.shape[1]
            self._add(f"gate:{name}:utilisation", module.last_utilisation * rows)
            self._add(f"gate:{name}:dropped", module.last_drop_fraction * rows)
        return hook

    def _expert_hook(self, name: str) -> Any:
        def hook(module: nn.Module, inputs: Any, out: torch.Tensor) -> None:  # [E, B, D]
            self._add(f"expert:{name}:nonpositive", (out.detach() <= 0).sum((1, 2)).double())
            self._add(f"expert:{name}:values", torch.tensor(float(out.shape[1] * out.shape[2])))
        return hook

    def keys(self) -> list[str]:
        """The sums' keys in a fixed order (so that ranks can all-reduce them in step)."""
        return sorted(self.sums)

    def summary(self) -> dict[str, Any]:
        """``{"gates": {name: {"mass": [G][E], "entropy": [G], "rows": n}},
        "experts": {name: {"nonpositive_share": [E]}}}`` from the sums so far; a sparse
        router's entry also holds ``"utilisation": [T][E]`` and ``"dropped": [T]``."""
        s = self.sums
        gates = {}
        for name in [*self.gates, *self.routers]:
            if f"gate:{name}:rows" in s:
                rows = s[f"gate:{name}:rows"]
                gates[name] = {"mass": (s[f"gate:{name}:mass"] / rows).tolist(),
                               "entropy": (s[f"gate:{name}:entropy"] / rows).tolist(),
                               "rows": int(rows.item())}
                for key in ("utilisation", "dropped"):  # sparse routers only
                    if f"gate:{name}:{key}" in s:
                        gates[name][key] = (s[f"gate:{name}:{key}"] / rows).tolist()
        experts = {}
        for name in self.experts:
            if f"expert:{name}:values" in s:
                share = s[f"expert:{name}:nonpositive"] / s[f"expert:{name}:values"]
                experts[name] = {"nonpositive_share": share.tolist()}
        return {"gates": gates, "experts": experts}


def flat_metrics(summary: dict[str, Any], prefix: str = "diag") -> dict[str, float]:
    """The summary as MLflow metric names: ``diag/gate/<name>/<g>/mass_e<k>``, ``.../entropy``,
    ``diag/expert/<name>/nonpositive_e<k>``; for sparse routers also
    ``diag/gate/<name>/<t>/utilisation_e<k>`` and ``.../dropped``."""
    out: dict[str, float] = {}
    for name, g in summary["gates"].items():
        for i, (mass, entropy) in enumerate(zip(g["mass"], g["entropy"], strict=True)):
            out[f"{prefix}/gate/{name}/{i}/entropy"] = entropy
            out |= {f"{prefix}/gate/{name}/{i}/mass_e{k}": m for k, m in enumerate(mass)}
        for i, used in enumerate(g.get("utilisation", [])):
            out |= {f"{prefix}/gate/{name}/{i}/utilisation_e{k}": u for k, u in enumerate(used)}
        for i, dropped in enumerate(g.get("dropped", [])):
            out[f"{prefix}/gate/{name}/{i}/dropped"] = dropped
    for name, e in summary["experts"].items():
        out |= {f"{prefix}/expert/{name}/nonpositive_e{k}": v
                for k, v in enumerate(e["nonpositive_share"])}
    return out
