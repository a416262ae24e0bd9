"""The jobs built on the recmtl library: its outermost layer. Nothing in ``recmtl`` imports them.

- ``feature_store/``: raw feature-store exports (or the synthetic generator) -> training Parquet.
- ``jobs/``: the product jobs behind the ``recmtl`` command (train, evaluate, export, score,
  compare).
- ``bench/``: benchmark scripts (``python -m pipelines.bench.<name>``); not installed.
- ``cli.py``: the ``recmtl`` command line.
"""
