"""`recmtl generate`: the embedded synthetic feature store, one generator per ``synthetic.kind``.

Each generator writes a store shaped unlike the others (``synthetic.kind`` and ``synthetic.days``
pick one): the funnel (``funnel.py``), daily raw exports with churn and drift (``days.py``),
behaviour histories (``sequences.py``), a long-tail raw export for ``recmtl prepare``
(``longtail.py``), tasks of set correlation (``multitask.py``) and a Hive-partitioned daily
export whose tastes jump and cycle (``shifts.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from pipelines.synthetic.days import generate_days
from pipelines.synthetic.funnel import generate_funnel
from pipelines.synthetic.longtail import generate_longtail
from pipelines.synthetic.multitask import generate_multitask
from pipelines.synthetic.sequences import generate_sequences
from pipelines.synthetic.shifts import generate_shifts
from recmtl.config import Config

Generator = Callable[[Config, "str | Path | None"], dict[str, int]]
GENERATORS: dict[str, Generator] = {
    "funnel": generate_funnel,
    "sequences": generate_sequences,
    "longtail": generate_longtail,
    "multitask": generate_multitask,
    "shifts": generate_shifts,
}


def generate(cfg: Config, root: str | Path | None = None) -> dict[str, int]:
    """Writes the store ``cfg.synthetic`` describes under ``root`` (default ``data.root``);
    returns the rows written per split (or per day). A funnel with ``synthetic.days > 0``
    writes the daily raw export instead."""
    if cfg.synthetic.kind == "funnel" and cfg.synthetic.days > 0:
        return generate_days(cfg, root)
    return GENERATORS[cfg.synthetic.kind](cfg, root)


def run(cfg: Config) -> None:
    """`recmtl generate`: writes the feature store and prints what it wrote."""
    t0 = time.perf_counter()
    counts = generate(cfg)
    took = time.perf_counter() - t0
    total = sum(counts.values())
    raw = cfg.synthetic.days > 0 or cfg.synthetic.kind == "longtail"
    where = Path(cfg.data.root) / "raw" if raw else cfg.data.root
    print(f"wrote {total:,} rows to {where} in {took:.1f}s "
          f"({', '.join(f'{k}={v:,}' for k, v in counts.items())})")
