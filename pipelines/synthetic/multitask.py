"""A multi-task store with the task structure as knobs (``synthetic.kind: multitask``).

After MultiTab-Bench (Sinodinos et al. 2025, the generator beside MultiTab-Net): task count,
task correlation and relative task complexity are set, and the true probabilities are kept,
so negative transfer can be produced on purpose and measured against the oracle.

Each row draws a user, an item and a context id uniformly, whose latent vectors ``a_u, b_i,
e_c`` (K each; Gaussian, whitened over their id set: mean 0, covariance I) are independent,
and ``D`` dense floats ``x`` ~ N(0, 1). With ``h = [a_u, b_i, e_c, x]`` and two sets of
orthonormal directions, ``w_0 .. w_T`` in the space of ``h`` and ``v_0 .. v_T``
in R^K (index 0 is shared by every task, ``j >= 1`` is task j's own), the unit-variance parts

    lin_j = <w_j, h>                   (linear effects)
    int_j = sum_k v_jk a_uk b_ik       (user x item interactions)

are pairwise uncorrelated, and task t (complexity c_t, correlation rho) has

    g_t(j)   = sqrt(1 - c_t) lin_j + sqrt(c_t) int_j
    signal_t = sqrt(rho) g_t(0) + sqrt(1 - rho) g_t(t + 1)          (unit variance)
    p_t      = sigmoid(logit(base_rate) + signal_scale * signal_t),   y_t ~ Bernoulli(p_t)

so that corr(signal_s, signal_t) = rho (sqrt((1 - c_s)(1 - c_t)) + sqrt(c_s c_t)) exactly over
the latent draw (``intended_correlation``). Labels are independent given the row, so the label
covariance is the covariance of the oracles. Columns: ``impression_id``, ``user_id``,
``item_id``, ``context`` (int64), ``dense_0 ..`` (float32), ``y0 ..`` (int8), ``p0 ..``
(float32). Deterministic by seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipelines.synthetic.parts import SPLITS, rank_auc, write_split
from recmtl.config import Config, SyntheticConfig
from recmtl.config.multitask import MultitaskConfig


@dataclass(frozen=True)
class TaskWorld:
    """The latent state shared by every split."""

    user_vec: np.ndarray  # [U, K]
    item_vec: np.ndarray  # [I, K]
    context_vec: np.ndarray  # [C, K]
    lin_dirs: np.ndarray  # [T + 1, 3K + D] orthonormal rows; row 0 shared
    int_dirs: np.ndarray  # [T + 1, K] orthonormal rows; row 0 shared
    complexity: np.ndarray  # [T]
    correlation: float
    signal_scale: float
    bias: float


def make_task_world(syn: SyntheticConfig, seed: int) -> TaskWorld:
    mt = syn.multitask
    rng = np.random.default_rng([seed, 0])
    k, t = syn.latent_dim, mt.num_tasks
    return TaskWorld(
        user_vec=_whitened(rng.normal(size=(syn.num_users, k))),
        item_vec=_whitened(rng.normal(size=(syn.num_items, k))),
        context_vec=_whitened(rng.normal(size=(syn.num_categories, k))),
        lin_dirs=_orthonormal_rows(t + 1, 3 * k + mt.num_dense, rng),
        int_dirs=_orthonormal_rows(t + 1, k, rng),
        complexity=np.asarray(mt.task_complexity(), dtype=np.float64),
        correlation=mt.correlation,
        signal_scale=mt.signal_scale,
        bias=float(np.log(mt.base_rate / (1 - mt.base_rate))),
    )


def task_signals(world: TaskWorld, users: np.ndarray, items: np.ndarray, contexts: np.ndarray,
                 dense: np.ndarray) -> np.ndarray:
    """The unit-variance task signals [N, T] of rows (the module docstring's formulas)."""
    a, b = world.user_vec[users], world.item_vec[items]
    h = np.concatenate([a, b, world.context_vec[contexts], dense], axis=1)
    lin = h @ world.lin_dirs.T  # [N, T + 1]
    inter = (a * b) @ world.int_dirs.T  # [N, T + 1]
    c = world.complexity
    shared = np.sqrt(1 - c) * lin[:, :1] + np.sqrt(c) * inter[:, :1]  # [N, T]
    own = np.sqrt(1 - c) * lin[:, 1:] + np.sqrt(c) * inter[:, 1:]
    return np.sqrt(world.correlation) * shared + np.sqrt(1 - world.correlation) * own


def intended_correlation(mt: MultitaskConfig) -> np.ndarray:
    """The [T, T] correlation of the task signals the knobs ask for."""
    c = np.asarray(mt.task_complexity(), dtype=np.float64)
    same_mix = np.sqrt(np.outer(1 - c, 1 - c)) + np.sqrt(np.outer(c, c))
    out = mt.correlation * same_mix
    np.fill_diagonal(out, 1.0)
    return out


def sample_rows(world: TaskWorld, num_dense: int, n: int, rng: np.random.Generator,
                first_id: int) -> pa.Table:
    """Draws ``n`` rows; returns them as an Arrow table."""
    users = rng.integers(len(world.user_vec), size=n)
    items = rng.integers(len(world.item_vec), size=n)
    contexts = rng.integers(len(world.context_vec), size=n)
    dense = rng.normal(size=(n, num_dense))
    p = _sigmoid(world.bias + world.signal_scale * task_signals(world, users, items, contexts,
                                                                dense))
    y = rng.random(p.shape) < p
    columns: dict[str, pa.Array] = {
        "impression_id": pa.array(np.arange(first_id, first_id + n, dtype=np.int64)),
        "user_id": pa.array(users.astype(np.int64)),
        "item_id": pa.array(items.astype(np.int64)),
        "context": pa.array(contexts.astype(np.int64)),
    }
    for i in range(num_dense):
        columns[f"dense_{i}"] = pa.array(dense[:, i].astype(np.float32))
    for t in range(p.shape[1]):
        columns[f"y{t}"] = pa.array(y[:, t].astype(np.int8))
    for t in range(p.shape[1]):
        columns[f"p{t}"] = pa.array(p[:, t].astype(np.float32))
    return pa.table(columns)


def generate_multitask(cfg: Config, root: str | Path | None = None) -> dict[str, int]:
    """`recmtl generate` for ``synthetic.kind: multitask``: ``root/{train,valid,test}/part-*``
    (default root ``data.root``); rows per split."""
    return {split: s["rows"] for split, s in write_multitask_store(cfg, root).items()}


def write_multitask_store(cfg: Config, root: str | Path | None = None) -> dict[str, dict]:
    """Writes the store; per split its rows, positive rate and oracle AUC per task, and the
    empirical correlations of the task logits and of the labels ([T][T] lists)."""
    syn = cfg.synthetic
    root = Path(root or cfg.data.root)
    world = make_task_world(syn, cfg.seed)
    summary = {}
    first_id = 0
    for split_index, (split, rows) in enumerate(
        zip(SPLITS, (syn.train_rows, syn.valid_rows, syn.test_rows), strict=True)
    ):
        rng = np.random.default_rng([cfg.seed, 1, split_index])
        tables = list(write_split(root / split, rows, syn.rows_per_file, syn.row_group_size,
                                  first_id, rng, lambda n, rng, first: sample_rows(
                                      world, syn.multitask.num_dense, n, rng, first)))
        first_id += rows
        summary[split] = _split_summary(pa.concat_tables(tables), syn.multitask.num_tasks,
                                        rows)
    return summary


def _split_summary(t: pa.Table, num_tasks: int, rows: int) -> dict:
    if rows == 0:
        return {"rows": 0}
    y = np.stack([t[f"y{i}"].to_numpy() for i in range(num_tasks)], axis=1).astype(np.float64)
    p = np.stack([t[f"p{i}"].to_numpy() for i in range(num_tasks)], axis=1).astype(np.float64)
    p_in = np.clip(p, 1e-7, 1 - 1e-7)
    logit = np.log(p_in) - np.log1p(-p_in)
    return {
        "rows": rows,
        "positive_rate": y.mean(axis=0).tolist(),
        "oracle_auc": [rank_auc(y[:, i] > 0, p[:, i]) for i in range(num_tasks)],
        "logit_correlation": np.atleast_2d(np.corrcoef(logit, rowvar=False)).tolist(),
        "label_correlation": np.atleast_2d(np.corrcoef(y, rowvar=False)).tolist(),
    }


def _whitened(v: np.ndarray) -> np.ndarray:
    """``v`` [N, K] made mean 0 with covariance exactly I over its N rows, so a uniformly drawn
    row has the moments the docstring's formulas assume even for a small id set (N > K)."""
    v = v - v.mean(axis=0)
    cov = v.T @ v / len(v)
    vals, vecs = np.linalg.eigh(cov)
    return v @ vecs @ np.diag(vals ** -0.5) @ vecs.T


def _orthonormal_rows(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random orthonormal vectors of R^dim as rows (n <= dim)."""
    q, _ = np.linalg.qr(rng.normal(size=(dim, n)))
    return q.T


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))
