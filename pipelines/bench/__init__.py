"""Benchmark scripts: run from a source checkout as ``python -m pipelines.bench.<name>``.

Not installed with the package (see pyproject.toml); each prints its figures beside a baseline
measured in the same run."""
